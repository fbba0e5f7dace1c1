"""Two operator replicas as host processes on the real control plane: the session operator and a second one,
each with its own Lease identity (the chart's pod name).

- The leader is SIGKILLed while 100 caches reconcile: the follower takes the Lease within its duration plus
  10 s, every child exists exactly once (UIDs counted across the whole run), and admission through the
  other replica refuses nothing meanwhile (100 injected pods, a ModelCache create/update loop).
- A replica cut off from the apiserver fails readiness and gives up the Lease, while admission and
  reconciling go on through the other one; it is ready again once the apiserver is back.

The same through the chart's Deployment on the real node is in test_high_availability_real_node.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.webhook.store import STALE_SECONDS, WATCH_SECONDS
from tests.integration.test_resilience import (
    DownloaderPlayer,
    Seen,
    assert_exactly_once,
    cache_manifest,
    children,
    create_caches,
    merge,
    nfs_store,
    serving_claims,
    wait_all_ready,
)
from tests.support.admission_load import CacheChurn, InjectedPods
from tests.support.kube import Cluster, wait_for
from tests.support.leases import lease_holder
from tests.support.operator import OperatorProcess
from tests.support.tcp_proxy import CuttableProxy, apiserver_address, kubeconfig_through

pytestmark = pytest.mark.integration

LEASE = "modelcache-operator"  # the operator's default Lease name, in its namespace
LEASE_SECONDS, RENEW_DEADLINE = 15.0, 10.0  # the operator's defaults (client-go's)


def leader_among(replicas: list[OperatorProcess]) -> OperatorProcess | None:
    leaders = []
    for replica in replicas:
        try:
            if replica.leading():
                leaders.append(replica)
        except OSError:
            continue  # a replica that is down leads nothing
    return leaders[0] if len(leaders) == 1 else None


def running(replica: OperatorProcess) -> bool:
    return replica.process is not None and replica.process.poll() is None


@pytest.fixture
def store(k8s: Cluster, namespace: str) -> Iterator[str]:
    name = f"ha-{uuid.uuid4().hex[:6]}"
    k8s.create_store(nfs_store(name, (namespace,)))
    k8s.wait_store_ready(name, timeout=60)
    yield name
    k8s.delete_store(name)


@pytest.fixture
def churn(k8s: Cluster) -> Iterator[tuple[str, str]]:
    """A namespace and a store of its own for the create/update loop, apart from the children counted."""
    namespace, store = f"t-churn-{uuid.uuid4().hex[:6]}", f"ha-churn-{uuid.uuid4().hex[:6]}"
    k8s.ensure_namespace(namespace)
    wait_for(lambda: k8s.core.list_namespaced_service_account(namespace).items, 30, describe=f"{namespace} ready")
    k8s.create_store(nfs_store(store, (namespace,)))
    k8s.wait_store_ready(store, timeout=60)
    yield namespace, store
    k8s.delete_store(store)
    k8s.core.delete_namespace(namespace)


@pytest.fixture
def second_replica(operator: OperatorProcess, tmp_path: Path, local_cluster: LocalCluster
                   ) -> Iterator[OperatorProcess]:
    """A second operator beside the session one, and the leader: the webhook configurations keep pointing at
    the session operator (the chart's Service would balance both), which hands the Lease over on SIGTERM."""
    replica = OperatorProcess(local_cluster.state.kubeconfig, tmp_path / "replica-b", manage_webhooks=False,
                              identity="replica-b")
    replica.start()
    try:
        if not replica.leading():
            operator.stop()
            wait_for(replica.leading, 10, interval=0.1, describe="the Lease handed over on SIGTERM",
                     diagnostics=replica.log_tail)
            operator.start()
        yield replica
    finally:
        replica.stop()
        if not running(operator):
            operator.start()  # never leave the shared operator dead


def test_leader_sigkilled_while_100_caches_reconcile_follower_takes_over_nothing_lost_or_doubled(
        k8s: Cluster, local_cluster: LocalCluster, namespace: str, store: str, churn: tuple[str, str],
        operator: OperatorProcess, second_replica: OperatorProcess) -> None:
    leader, follower = second_replica, operator
    assert lease_holder(k8s.client, LEASE) == leader.identity and not follower.leading()
    seen: Seen = {}
    with DownloaderPlayer(k8s, local_cluster, store):
        k8s.create_cache(namespace, cache_manifest("served", store, "r0"))
        k8s.wait_phase(namespace, "served", "Ready", timeout=120, diagnostics=leader.log_tail)
        caches = {"served": "r0", **create_caches(k8s, namespace, store, 100, revisions=10)}
        # Mid-reconcile: some caches have their claims, most are not Ready yet.
        wait_for(lambda: len(serving_claims(k8s, namespace)[0]) >= 20, 120, interval=0.1,
                 describe="20 caches with their PV", diagnostics=leader.log_tail)
        merge(seen, children(k8s, namespace, store))
        # Admission through the replica that stays: injected pods and ModelCache creates and updates.
        with InjectedPods(k8s, namespace, "served", 100) as pods, CacheChurn(k8s, *churn) as writes:
            leader.kill()
            killed_at = time.monotonic()
            wait_for(follower.leading, LEASE_SECONDS + 10, interval=0.1, describe="the follower leading",
                     diagnostics=follower.log_tail)
            takeover = time.monotonic() - killed_at
            assert lease_holder(k8s.client, LEASE) == follower.identity
            merge(seen, children(k8s, namespace, store))
            pods.wait_finished(120)
        assert pods.failures == [] and pods.done == 100, pods.failures[:5]
        assert writes.failures == [] and writes.done > 0, writes.failures[:5]
        leader.start()  # back as a follower: the Lease is held
        wait_all_ready(k8s, namespace, len(caches), follower)
    assert not leader.leading() and follower.leading()
    time.sleep(follower.resync_seconds * 2)  # a late duplicate would show up now
    final = children(k8s, namespace, store)
    merge(seen, final)
    assert_exactly_once(seen, final, k8s, namespace, caches)
    print(f"failover after SIGKILL: {takeover:.1f}s (lease {LEASE_SECONDS:.0f}s); admitted meanwhile: "
          f"{pods.done} pods, {writes.done} cache create+update pairs")
    assert takeover <= LEASE_SECONDS + 10


def test_a_replica_cut_off_from_the_apiserver_fails_readiness_while_the_other_serves(
        k8s: Cluster, local_cluster: LocalCluster, namespace: str, store: str, operator: OperatorProcess,
        tmp_path: Path) -> None:
    proxy = CuttableProxy(apiserver_address(local_cluster.state.kubeconfig))
    kubeconfig = kubeconfig_through(local_cluster.state.kubeconfig, proxy, tmp_path / "proxied.kubeconfig")
    cut_off = OperatorProcess(str(kubeconfig), tmp_path / "cut-off", manage_webhooks=False, identity="cut-off")
    try:
        cut_off.start()
        # The cut-off replica leads: the session operator hands the Lease over on SIGTERM and comes back.
        operator.stop()
        wait_for(cut_off.leading, 10, interval=0.1, describe="the Lease handed over on SIGTERM",
                 diagnostics=cut_off.log_tail)
        operator.start()
        assert cut_off.readiness() == (200, "ok")
        assert lease_holder(k8s.client, LEASE) == "cut-off"

        proxy.cut()
        cut_at = time.monotonic()
        wait_for(lambda: not cut_off.leading(), RENEW_DEADLINE + 2, interval=0.1,
                 describe="the cut-off replica giving the Lease up", diagnostics=cut_off.log_tail)
        wait_for(operator.leading, LEASE_SECONDS + 5, interval=0.1, describe="the session operator leading",
                 diagnostics=operator.log_tail)
        def unready() -> str | None:
            status, reason = cut_off.readiness()
            return reason if status == 503 else None
        reason = wait_for(unready, STALE_SECONDS + 15, interval=0.5, describe="the cut-off replica unready")
        unready_after = time.monotonic() - cut_at
        assert "no contact with the apiserver" in reason, reason
        # The bound counts from the last contact, which a healthy idle watch makes every WATCH_SECONDS.
        assert unready_after >= STALE_SECONDS - WATCH_SECONDS - 1, f"unready {unready_after:.1f}s after the cut"
        assert lease_holder(k8s.client, LEASE) == operator.identity

        # Through the other replica: admission and reconciles go on.
        with DownloaderPlayer(k8s, local_cluster, store):
            k8s.create_cache(namespace, cache_manifest("during-cut", store))
            k8s.wait_phase(namespace, "during-cut", "Ready", timeout=120, diagnostics=operator.log_tail)
        server = {"metadata": {"name": "server", "labels": {"modelcache.dev/inject": "true"},
                               "annotations": {"modelcache.dev/caches": "during-cut"}},
                  "spec": {"containers": [{"name": "vllm", "image": "vllm"}]}}
        pod = wait_for(lambda: _admitted(k8s, namespace, server), 30, describe="an injected pod")
        assert pod.metadata.annotations["modelcache.dev/injected"] == "true"
        with InjectedPods(k8s, namespace, "during-cut", 50) as pods:
            pods.wait_finished(120)
        assert pods.failures == [] and pods.done == 50, pods.failures[:5]
        assert cut_off.readiness()[0] == 503 and running(cut_off)

        proxy.restore()
        wait_for(lambda: cut_off.readiness() == (200, "ok"), 60, interval=0.5,
                 describe="the replica ready again", diagnostics=cut_off.log_tail)
        assert not cut_off.leading() and operator.leading()
    finally:
        cut_off.stop()
        proxy.close()
        if not running(operator):
            operator.start()


def _admitted(k8s: Cluster, namespace: str, pod: dict[str, Any]) -> Any:
    """The created pod, or None while the webhook's view has not caught up with the Ready cache yet."""
    try:
        return k8s.core.create_namespaced_pod(namespace, pod)
    except ApiException as error:
        if error.status != 403:
            raise
        return None
