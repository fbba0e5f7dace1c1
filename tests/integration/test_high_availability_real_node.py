"""High availability with the chart's Deployment as real Pods on the real node (tests/support/chart_on_node.py):
two replicas in containers, the apiserver calling the webhook Service at the ready pods' addresses.

- The Lease names one of the two pods; only that pod's leader gauge is 1.
- A rolling `helm upgrade` while a client creates 200 labelled pods and another creates and updates
  ModelCaches: 0 admission failures, every pod injected, the Lease handed to a new pod.
- The leader's container SIGKILLed: a replica leads again within the lease duration plus 10 s, and reconciles.
- The leader Pod lost (frozen, force-deleted, killed) while 60 caches reconcile: the other replica takes the
  Lease once it has expired, admits meanwhile, every cache converges and every child exists exactly once.

Needs what test_real_node.py needs; a missing piece fails the module with the reason."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.node import REAL_NODE
from modelcache_operator.api import v1alpha2 as api
from tests.integration.test_resilience import (
    DownloaderPlayer,
    Seen,
    assert_exactly_once,
    cache_manifest,
    children,
    create_caches,
    merge,
    nfs_store,
    ready_count,
    serving_claims,
)
from tests.support.admission_load import CacheChurn, InjectedPods
from tests.support.chart_on_node import ChartRelease, chart_on_node
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.leases import lease_holder
from tests.support.pod_processes import operator_pid, signal_pod
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
    remove_team(release, NAMESPACE, stores)


def remove_team(release: ChartRelease, namespace: str, stores: tuple[str, ...]) -> None:
    """Deletes the namespace (its caches, pods) and the stores, and waits until they are gone while the chart's
    operator still runs to finish them: otherwise the next module's operator inherits their finalizers."""
    k8s = release.k8s
    with contextlib.suppress(ApiException):
        k8s.core.delete_namespace(namespace)
    wait_for(lambda: _namespace_gone(k8s, namespace) or None, 300, interval=1,
             describe=f"namespace {namespace} deleted", diagnostics=release.diagnostics)
    for store in stores:
        k8s.delete_store(store)
    wait_for(lambda: all(k8s.get_store(store) is None for store in stores) or None, 120, interval=1,
             describe=f"stores {', '.join(stores)} deleted", diagnostics=release.diagnostics)


def _namespace_gone(k8s: Cluster, namespace: str) -> bool:
    try:
        k8s.core.read_namespace(namespace)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def gauge(pod_ip: str) -> str:
    """The modelcache_leader value that pod reports on its own address."""
    with urllib.request.urlopen(f"http://{pod_ip}:9090/metrics", timeout=5) as response:
        line = next(x for x in response.read().decode().splitlines() if x.startswith("modelcache_leader "))
    return str(line.split()[1])


def leader_gauges(release: ChartRelease) -> dict[str, str]:
    """Each ready pod's modelcache_leader value, scraped from the pod's own address."""
    return {pod.metadata.name: gauge(pod.status.pod_ip) for pod in release.ready_pods()}


def one_leader(release: ChartRelease) -> str | None:
    """The pod that holds the Lease, once it is a ready pod and the only one whose gauge says so."""
    try:
        gauges = leader_gauges(release)
    except OSError:
        return None
    leaders = [name for name, value in gauges.items() if value == "1.0"]
    holder = lease_holder(release.k8s.client, release.deployment)
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


def test_leader_container_sigkilled_a_replica_leads_again_and_reconciles(
        release: ChartRelease, team: tuple[str, str]) -> None:
    k8s, (store, _) = release.k8s, team
    leader = wait_for(lambda: one_leader(release), 60, describe="one leader pod")
    os.kill(operator_pid(leader), signal.SIGKILL)
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


RETRY_SECONDS = 2.0  # the chart's leaderElection.retryPeriodSeconds (client-go's default)


@pytest.fixture
def lost_leader_team(release: ChartRelease) -> Iterator[tuple[str, str]]:
    """A namespace and a store of its own, so that every child counted belongs to this test."""
    k8s = release.k8s
    namespace, store = f"ha-lost-{uuid.uuid4().hex[:6]}", f"ha-lost-{uuid.uuid4().hex[:6]}"
    k8s.ensure_namespace(namespace)
    wait_for(lambda: k8s.core.list_namespaced_service_account(namespace).items, 30, describe=f"{namespace} ready")
    k8s.create_store(nfs_store(store, (namespace,)))
    k8s.wait_store_ready(store, timeout=60)
    yield namespace, store
    remove_team(release, namespace, (store,))


def endpoint_addresses(k8s: Cluster) -> set[str]:
    """Every address, ready or not, of the release namespace's Endpoints (webhook and metrics Services)."""
    return {address.ip for endpoints in k8s.core.list_namespaced_endpoints(OPERATOR_NAMESPACE).items
            for subset in endpoints.subsets or []
            for address in [*(subset.addresses or []), *(subset.not_ready_addresses or [])]}


def test_leader_pod_lost_the_follower_takes_the_lease_and_nothing_is_lost_or_doubled(
        release: ChartRelease, lost_leader_team: tuple[str, str]) -> None:
    """The leader Pod vanishes as with a lost node: its processes are frozen (no renew, no release, no answer),
    the Pod force-deleted (grace 0) and its processes killed, so it never comes back under its name. The
    real node is cordoned first, so the Deployment's replacement stays Pending and the follower is the only
    candidate for the Lease."""
    k8s, cluster, (namespace, store) = release.k8s, release.cluster, lost_leader_team
    leader = wait_for(lambda: one_leader(release), 60, describe="one leader pod", diagnostics=release.diagnostics)
    pods_by_name = {p.metadata.name: p for p in release.ready_pods()}
    leader_ip = pods_by_name[leader].status.pod_ip
    follower, follower_ip = next((n, p.status.pod_ip) for n, p in pods_by_name.items() if n != leader)
    seen: Seen = {}
    with DownloaderPlayer(k8s, cluster, store):
        k8s.create_cache(namespace, cache_manifest("served", store, "r0"))
        k8s.wait_phase(namespace, "served", "Ready", timeout=120, diagnostics=release.diagnostics)
        caches = {"served": "r0", **create_caches(k8s, namespace, store, 60, revisions=10)}
        wait_for(lambda: len(serving_claims(k8s, namespace)[0]) >= 10, 120, interval=0.1,
                 describe="10 caches with their PV", diagnostics=release.diagnostics)
        merge(seen, children(k8s, namespace, store))
        cluster.kubectl("cordon", REAL_NODE)
        try:
            ready_at_loss, reconciling = ready_count(k8s, namespace), len(caches)
            lost_at = time.monotonic()
            pids = signal_pod(leader, signal.SIGSTOP)
            k8s.core.delete_namespaced_pod(leader, OPERATOR_NAMESPACE, grace_period_seconds=0)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_for(lambda: leader_ip not in endpoint_addresses(k8s) or None, 30, interval=0.1,
                     describe="the lost pod out of the Services' endpoints")
            # Admission through the follower alone, while nobody leads and after.
            with InjectedPods(k8s, namespace, "served", 60, interval=0.2, prefix="lost") as pods:
                wait_for(lambda: lease_holder(k8s.client, release.deployment) == follower or None,
                         LEASE_SECONDS + 2 * RETRY_SECONDS + 5, interval=0.1, describe="the follower holding the Lease",
                         diagnostics=release.diagnostics)
                takeover = time.monotonic() - lost_at
                wait_for(lambda: gauge(follower_ip) == "1.0" or None, 10, interval=0.2,
                         describe="the follower's leader gauge 1")
                merge(seen, children(k8s, namespace, store))
                pods.wait_finished(120)
            caches["after-takeover"] = "r3"
            k8s.create_cache(namespace, cache_manifest("after-takeover", store, "r3"))
            wait_for(lambda: ready_count(k8s, namespace) == len(caches) or None, 180, interval=0.5,
                     describe=f"{len(caches)} caches Ready",
                     diagnostics=lambda: f"ready: {ready_count(k8s, namespace)}\n{release.diagnostics()}")
            time.sleep(float(release.values["operator"]["resyncSeconds"]) * 2)  # a late duplicate would show now
            final = children(k8s, namespace, store)
            merge(seen, final)
            assert lease_holder(k8s.client, release.deployment) == follower
        finally:
            cluster.kubectl("uncordon", REAL_NODE)
    assert pods.failures == [] and pods.done == 60, pods.failures[:5]
    assert_exactly_once(seen, final, k8s, namespace, caches)
    print(f"leader pod lost ({ready_at_loss} of {reconciling} caches Ready at the loss): the follower "
          f"{follower} took the Lease after {takeover:.1f}s (lease {LEASE_SECONDS:.0f}s, retry "
          f"{RETRY_SECONDS:.0f}s); {pods.done} pods admitted meanwhile, 0 failures")
    # The follower waits a whole lease duration after the last renew it saw (renews and its reads each come
    # every retry period), so it starts between LEASE - RETRY and LEASE + 2 RETRY after the loss.
    assert LEASE_SECONDS - RETRY_SECONDS <= takeover <= LEASE_SECONDS + 2 * RETRY_SECONDS + 1, takeover
    release.wait_ready(180)  # the replacement pod, scheduled once the node is uncordoned
