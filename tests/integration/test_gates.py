"""notReadyPolicy gate on the real control plane: the webhook gates serving pods whose cache is still
downloading, the real scheduler leaves them alone (no GPU of the kwok H100 nodes is allocated), and the
operator lifts the gates once the pinned revision is published; a failed download or a deleted cache
leaves them gated with an event on each pod that names the cache and the reason."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from modelcache_devcluster.cluster import LocalCluster
from modelcache_devcluster.kwok import FAILING_NODE
from modelcache_operator.api import v1alpha2 as api
from tests.support.downloader_role import REVISION_A, download_job, downloader_reporter, publish
from tests.support.kube import Cluster, nfs_store_manifest, wait_for
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration

GATE = "modelcache.dev/cache-{}"
# The download Job's pod never schedules on its own: the cache's state follows the downloader's reports.
NEVER_SCHEDULED = {"nodeSelector": {"kubernetes.io/hostname": "no-such-node"}}
GPUS_PER_POD = 8  # a whole kwok H100 node each


@pytest.fixture
def store(k8s: Cluster, operator: OperatorProcess, namespace: str) -> Iterator[str]:
    name = f"nfs-{uuid.uuid4().hex[:6]}"
    k8s.create_store(nfs_store_manifest(name, [namespace]))
    k8s.wait_store_ready(name, 60)
    yield name
    k8s.delete_store(name)


def downloading_cache(k8s: Cluster, cluster: LocalCluster, operator: OperatorProcess, namespace: str,
                      name: str, store: str) -> tuple[Any, Any, Any]:
    """A cache with the default policy whose download resolved REVISION_A: (ModelDownload, Job, reporter)."""
    k8s.create_cache(namespace, {
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
        "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}, "store": store,
                 "download": NEVER_SCHEDULED}})
    _, download = k8s.wait_download(namespace, name, diagnostics=operator.log_tail)
    job = download_job(k8s, download, diagnostics=operator.log_tail)
    reporter = downloader_reporter(k8s, cluster, download["metadata"]["namespace"], download["metadata"]["name"])
    reporter.send(api.DownloadReport(jobName=job.metadata.name, state="Downloading", requestedRevision="main",
                                     resolvedRevision=REVISION_A, bytesDone=1, bytesTotal=100), force=True)
    wait_for(lambda: ((k8s.get_cache(namespace, name) or {}).get("status") or {}).get("pendingRevisionPath"),
             30, describe=f"ModelCache {name}'s pending folder", diagnostics=operator.log_tail)
    return download, job, reporter


def statefulset(k8s: Cluster, namespace: str, name: str, cache: str, replicas: int = 2) -> None:
    # Parallel: an OrderedReady set would create pod 1 only once pod 0 runs.
    k8s.apps.create_namespaced_stateful_set(namespace, {
        "metadata": {"name": name},
        "spec": {"serviceName": name, "replicas": replicas, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": name}},
                 "template": {
                     "metadata": {"labels": {"app": name, "modelcache.dev/inject": "true"},
                                  "annotations": {"modelcache.dev/caches": cache}},
                     "spec": {"containers": [{
                         "name": "vllm", "image": "vllm/vllm-openai", "args": ["--model", "$(MODEL_DIR)"],
                         "resources": {"limits": {"nvidia.com/gpu": str(GPUS_PER_POD), "memory": "16Gi"}}}]}}}})


def pods_of(k8s: Cluster, namespace: str, app: str, count: int, operator: OperatorProcess) -> list[Any]:
    def probe() -> list[Any] | None:
        pods = k8s.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
        return pods if len(pods) == count else None
    pods: list[Any] = wait_for(probe, 60, describe=f"{count} pods of {app}", diagnostics=operator.log_tail)
    return pods


def allocated_gpus(k8s: Cluster, namespace: str | None = None) -> dict[str, int]:
    """nvidia.com/gpu requested by the pods bound to each GPU node, as the scheduler counts them."""
    nodes: dict[str, int] = {str(n.metadata.name): 0 for n in k8s.core.list_node().items
             if "nvidia.com/gpu" in (n.status.capacity or {})}
    pods = (k8s.core.list_namespaced_pod(namespace) if namespace else k8s.core.list_pod_for_all_namespaces()).items
    for pod in pods:
        if pod.spec.node_name in nodes and pod.status.phase not in ("Succeeded", "Failed"):
            for container in pod.spec.containers:
                limits = (container.resources.limits if container.resources else None) or {}
                nodes[pod.spec.node_name] += int(limits.get("nvidia.com/gpu", 0))
    return nodes


def gated_by(pod: Any) -> list[str]:
    conditions = {c.type: c for c in pod.status.conditions or []}
    scheduled = conditions.get("PodScheduled")
    assert scheduled is not None and scheduled.reason == "SchedulingGated", pod.status
    return [g.name for g in pod.spec.scheduling_gates or []]


def pod_events(k8s: Cluster, namespace: str, pod: str) -> list[Any]:
    return [e for e in k8s.events(namespace) if e.involved_object.kind == "Pod" and e.involved_object.name == pod]


def test_gated_statefulset_holds_no_gpu_until_the_cache_is_ready(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster, store: str) -> None:
    _, job, reporter = downloading_cache(k8s, local_cluster, operator, namespace, "big", store)
    baseline = allocated_gpus(k8s)
    assert len(baseline) >= 2, f"the dev cluster's GPU nodes: {baseline}"
    statefulset(k8s, namespace, "server", "big")
    pods = pods_of(k8s, namespace, "server", 2, operator)
    for pod in pods:
        assert gated_by(pod) == [GATE.format("big")]
        assert pod.spec.node_name is None
        mount = next(m for m in pod.spec.containers[0].volume_mounts if m.name == "mc-big")
        assert (mount.sub_path, mount.read_only) == (f"all/{REVISION_A}", True)
        assert [c.name for c in pod.spec.init_containers] == ["modelcache-tools"]  # no wait container
    # An ungated pod created after them gets scheduled onto a GPU node: the scheduler has run since.
    k8s.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "control"},
        "spec": {"nodeSelector": {"nvidia.com/gpu.present": "true"},
                 "containers": [{"name": "c", "image": "busybox"}]}})
    wait_for(lambda: k8s.core.read_namespaced_pod("control", namespace).spec.node_name, 30,
             describe="the ungated control pod scheduled")
    assert all(p.spec.node_name is None for p in pods_of(k8s, namespace, "server", 2, operator))
    assert allocated_gpus(k8s, namespace) == {node: 0 for node in baseline}
    assert allocated_gpus(k8s) == baseline

    publish(reporter, job.metadata.name, revision=REVISION_A)

    def running() -> list[Any] | None:
        pods = k8s.core.list_namespaced_pod(namespace, label_selector="app=server").items
        return pods if len(pods) == 2 and all(p.status.phase == "Running" for p in pods) else None
    pods = wait_for(running, 60, describe="the released pods scheduled and running", diagnostics=operator.log_tail)
    assert all(not p.spec.scheduling_gates for p in pods)
    assert len({p.spec.node_name for p in pods}) == 2  # 8 GPUs each: one pod per H100 node
    assert sum(allocated_gpus(k8s, namespace).values()) == 2 * GPUS_PER_POD
    for pod in pods:
        reasons = {e.reason: e.message for e in pod_events(k8s, namespace, pod.metadata.name)}
        assert reasons.get("CacheReady") == (f'ModelCache "big" published revision {REVISION_A}; '
                                             "scheduling gate removed"), reasons


def test_a_failed_download_leaves_the_pods_gated_with_an_event_naming_the_reason(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster, store: str) -> None:
    _, job, reporter = downloading_cache(k8s, local_cluster, operator, namespace, "broken", store)
    statefulset(k8s, namespace, "doomed", "broken")
    pods = pods_of(k8s, namespace, "doomed", 2, operator)
    assert all(gated_by(p) == [GATE.format("broken")] for p in pods)

    reporter.send(api.DownloadReport(jobName=job.metadata.name, state="Failed", requestedRevision="main",
                                     resolvedRevision=REVISION_A, reason="Unauthorized",
                                     message="the hub answered 401 for Qwen/Qwen3-0.6B"), force=True)
    # Fail the Job's pod the way a real exit would: bind it to kwok's failing node, which ends it with exit 11.
    job_pod = wait_for(lambda: next(iter(k8s.core.list_namespaced_pod(
        job.metadata.namespace, label_selector=f"job-name={job.metadata.name}").items), None), 30,
        describe="the download Job's pod")
    k8s.core.create_namespaced_binding(job.metadata.namespace, {
        "metadata": {"name": job_pod.metadata.name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": FAILING_NODE}}, _preload_content=False)
    k8s.wait_phase(namespace, "broken", "Failed", diagnostics=operator.log_tail)

    def failure_events() -> dict[str, str] | None:
        found = {}
        for pod in pods:
            messages = [e.message for e in pod_events(k8s, namespace, pod.metadata.name)
                        if e.reason == "DownloadFailed"]
            if messages:
                found[pod.metadata.name] = messages[0]
        return found if len(found) == 2 else None
    events = wait_for(failure_events, 30, describe="a DownloadFailed event on each gated pod",
                      diagnostics=operator.log_tail)
    for message in events.values():
        # The cache's Ready message: the downloader's, and where the download lives.
        assert message == ('ModelCache "broken" failed (Unauthorized: the hub answered 401 for Qwen/Qwen3-0.6B '
                           f"(shared, requested by {namespace}/broken)); the pod stays gated until a retry "
                           "publishes its revision"), message
    for pod in k8s.core.list_namespaced_pod(namespace, label_selector="app=doomed").items:
        assert gated_by(pod) == [GATE.format("broken")] and pod.spec.node_name is None
        assert "Unauthorized" in pod.metadata.annotations["modelcache.dev/gate-status"]
    assert allocated_gpus(k8s, namespace) == dict.fromkeys(allocated_gpus(k8s, namespace), 0)


def test_a_deleted_cache_leaves_its_pods_gated_with_an_event(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster, store: str) -> None:
    downloading_cache(k8s, local_cluster, operator, namespace, "doomed", store)
    statefulset(k8s, namespace, "orphan", "doomed", replicas=1)
    pod = pods_of(k8s, namespace, "orphan", 1, operator)[0]
    assert gated_by(pod) == [GATE.format("doomed")]
    k8s.delete_cache(namespace, "doomed")
    wait_for(lambda: k8s.get_cache(namespace, "doomed") is None, 60, describe="the ModelCache gone",
             diagnostics=operator.log_tail)
    event = wait_for(lambda: next((e for e in pod_events(k8s, namespace, pod.metadata.name)
                                   if e.reason == "CacheDeleted"), None), 30,
                     describe="a CacheDeleted event on the pod", diagnostics=operator.log_tail)
    assert event.message.startswith('ModelCache "doomed" was deleted while this pod waited for it')
    current = k8s.core.read_namespaced_pod(pod.metadata.name, namespace)
    assert gated_by(current) == [GATE.format("doomed")] and current.spec.node_name is None
