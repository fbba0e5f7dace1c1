"""High availability with the chart's Deployment as real Pods on the real node (tests/support/chart_on_node.py):
two replicas in containers, the apiserver calling the webhook Service at the ready pods' addresses.

- The Lease names one of the two pods; only that pod's leader gauge is 1.
- A rolling `helm upgrade` while a client creates 200 labelled pods and another creates and updates
  ModelCaches: 0 admission failures, every pod injected, the Lease handed to a new pod.
- The leader's container SIGKILLed: a replica leads again within the lease duration plus 10 s, and reconciles.

Needs what test_real_node.py needs; a missing piece fails the module with the reason."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcache_devcluster.node import REAL_NODE
from modelcache_operator.api import v1alpha2 as api
from tests.integration.test_resilience import DownloaderPlayer, cache_manifest, nfs_store
from tests.support.admission_load import CacheChurn, InjectedPods
from tests.support.chart_on_node import ChartRelease, chart_on_node
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.real_node_flow import RealNodeCluster

pytestmark = pytest.mark.integration

NAMESPACE = "ha-team"
LEASE_SECONDS = 15.0


@pytest.fixture(scope="module")
def release(real_cluster: RealNodeCluster) -> Iterator[ChartRelease]:
    with chart_on_node(real_cluster.cluster, real_cluster.k8s, real_cluster.workdir / "ha-chart") as installed:
        yield installed


@pytest.fixture(scope="module")
def team(release: ChartRelease) -> Iterator[tuple[str, str]]:
    """The team namespace and two stores allowing it: one for a served cache, one for the create/update loop."""
    k8s = release.k8s
    k8s.ensure_namespace(NAMESPACE)
    wait_for(lambda: k8s.core.list_namespaced_service_account(NAMESPACE).items, 30, describe="namespace ready")
    stores = (f"ha-{uuid.uuid4().hex[:6]}", f"ha-churn-{uuid.uuid4().hex[:6]}")
    for store in stores:
        k8s.create_store(nfs_store(store, (NAMESPACE,)))
        k8s.wait_store_ready(store, timeout=60)
    yield stores
    for store in stores:
        k8s.delete_store(store)


def lease_holder(release: ChartRelease) -> str:
    return release.cluster.kubectl("get", "lease", release.deployment, "-n", OPERATOR_NAMESPACE,
                                   "-o", "jsonpath={.spec.holderIdentity}")


def leader_gauges(release: ChartRelease) -> dict[str, str]:
    """Each ready pod's modelcache_leader value, scraped from the pod's own address."""
    gauges = {}
    for pod in release.ready_pods():
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:9090/metrics", timeout=5) as response:
            line = next(x for x in response.read().decode().splitlines() if x.startswith("modelcache_leader "))
        gauges[pod.metadata.name] = line.split()[1]
    return gauges


def one_leader(release: ChartRelease) -> str | None:
    """The pod that holds the Lease, once it is a ready pod and the only one whose gauge says so."""
    try:
        gauges = leader_gauges(release)
    except OSError:
        return None
    leaders = [name for name, value in gauges.items() if value == "1.0"]
    holder = lease_holder(release)
    return holder if leaders == [holder] and len(gauges) == 2 else None


def test_two_replicas_on_the_node_one_holds_the_lease_by_pod_name(release: ChartRelease) -> None:
    pods = release.ready_pods()
    assert len(pods) == 2 and {p.spec.node_name for p in pods} == {REAL_NODE}
    leader = wait_for(lambda: one_leader(release), 60, describe="one leader pod", diagnostics=release.diagnostics)
    assert leader in {p.metadata.name for p in pods}
    table = release.cluster.kubectl("get", "lease", "-n", OPERATOR_NAMESPACE)
    assert leader in table, table


def test_rolling_upgrade_under_admission_load_refuses_nothing(release: ChartRelease, team: tuple[str, str]) -> None:
    k8s, (store, churn_store) = release.k8s, team
    with DownloaderPlayer(k8s, release.cluster, store):
        k8s.create_cache(NAMESPACE, cache_manifest("served", store, "r0"))
        k8s.wait_phase(NAMESPACE, "served", "Ready", timeout=120, diagnostics=release.diagnostics)
    before = {p.metadata.name for p in release.ready_pods()}
    old_leader = wait_for(lambda: one_leader(release), 60, describe="one leader pod")
    pods = InjectedPods(k8s, NAMESPACE, "served", 200, interval=0.3, prefix="roll")
    churn = CacheChurn(k8s, NAMESPACE, churn_store)
    with pods, churn:
        wait_for(lambda: pods.done >= 10, 60, describe="10 pods admitted before the upgrade")
        started, created_before = time.monotonic(), pods.done
        release.upgrade({"podAnnotations": {"modelcache.dev/rollout": uuid.uuid4().hex}}, timeout=300)
        rolled, created_during = time.monotonic() - started, pods.done - created_before
        pods.wait_finished(180)
    after = {p.metadata.name for p in release.ready_pods()}
    assert after.isdisjoint(before), "every pod was replaced"
    assert pods.failures == [], f"{len(pods.failures)} pod admissions failed: {pods.failures[:5]}"
    assert churn.failures == [], f"{len(churn.failures)} ModelCache writes failed: {churn.failures[:5]}"
    assert pods.done == 200 and churn.done > 0
    # The client was creating pods before and during the rollout (how many are left for after it depends on
    # how fast the node rolls, so that is not asserted).
    assert created_before > 0 and created_during > 0, (created_before, created_during)
    new_leader = wait_for(lambda: one_leader(release), 60, describe="one leader pod after the upgrade")
    assert new_leader != old_leader and new_leader in after
    print(f"rolling upgrade: {rolled:.1f}s; admitted during it: {created_during} pods, "
          f"{churn.done} cache create+update pairs in all; 0 failures")


def _operator_pid(pod: str) -> int:
    """The host PID of the operator process (`modelcache-operator run`) in that pod's container."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"MODELCACHE_POD_NAME={pod}".encode() in environ and b"run" in argv and b"webhook" not in argv:
            return int(proc.name)
    raise AssertionError(f"no operator process of {pod} on this host")


def test_leader_container_sigkilled_a_replica_leads_again_and_reconciles(
        release: ChartRelease, team: tuple[str, str]) -> None:
    k8s, (store, _) = release.k8s, team
    leader = wait_for(lambda: one_leader(release), 60, describe="one leader pod")
    os.kill(_operator_pid(leader), signal.SIGKILL)
    killed_at = time.monotonic()
    led_again: dict[str, float] = {}

    def leading_again() -> str | None:
        holder = one_leader(release)
        if holder is not None:
            led_again.setdefault(holder, time.monotonic() - killed_at)
        return holder

    # Either the follower (the Lease expired) or the restarted container (its pod name, so its own Lease).
    holder = wait_for(leading_again, LEASE_SECONDS + 10 + 30, interval=0.2, describe="a leader again",
                      diagnostics=release.diagnostics)
    takeover = led_again[holder]
    with DownloaderPlayer(k8s, release.cluster, store):
        k8s.create_cache(NAMESPACE, cache_manifest(f"after-kill-{uuid.uuid4().hex[:4]}", store, "r0"))
        wait_for(lambda: all((c.get("status") or {}).get("phase") == "Ready" for c in _caches(k8s)), 120,
                 describe="every cache Ready", diagnostics=release.diagnostics)
    print(f"leader container SIGKILLed: {holder} ({'restarted' if holder == leader else 'the follower'}) "
          f"led again after {takeover:.1f}s")
    assert takeover <= LEASE_SECONDS + 10


def _caches(k8s: Cluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = k8s.custom.list_namespaced_custom_object(
        api.GROUP, api.VERSION, NAMESPACE, api.PLURAL)["items"]
    return [c for c in items if not c["metadata"]["name"].startswith("churn-")]

