"""The chart's operator on the real node: `helm install` runs it as the Deployment's Pod in a real container
(containerd + runc, the image built from this repository), the operator reaches the apiserver from the pod
network, and the apiserver reaches the chart's webhooks at the pod: a ModelStore and a ModelCache pass the
validating webhooks, the operator's download Job takes the cache to Ready, and an opted-in pod comes back
injected. Needs what test_real_node.py needs; a missing piece fails the module with the reason.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.images import OPERATOR_IMAGE
from modelcache_devcluster.node import GATEWAY, POD_SUBNET, REAL_NODE
from modelcache_operator.api.names import ANN_CACHES, ANN_INJECTED, LABEL_INJECT
from tests.hubs import package_model_files
from tests.hubs.huggingface import HuggingFaceHub
from tests.support.chart_on_node import ChartRelease, chart_on_node
from tests.support.demo_flow import REPO
from tests.support.kube import wait_for
from tests.support.real_node import SERVING_IMAGE
from tests.support.real_node_flow import NODE_SELECTOR, TOLERATIONS, RealNodeCluster

pytestmark = pytest.mark.integration
NAMESPACE, STORE, CACHE = "chart-team", "chart-hostpath", "minilm"


@pytest.fixture(scope="module")
def release(real_cluster: RealNodeCluster) -> Iterator[ChartRelease]:
    with chart_on_node(real_cluster.cluster, real_cluster.k8s, real_cluster.workdir / "chart") as installed:
        yield installed


@pytest.fixture(scope="module")
def hub() -> Iterator[HuggingFaceHub]:
    server = HuggingFaceHub(host=GATEWAY)  # on the pod bridge's gateway, where the Job's container reaches it
    server.add_repo(REPO, dict(package_model_files()))
    server.start()
    yield server
    server.stop()


def test_operator_runs_as_the_charts_pod_in_a_container_on_the_real_node(release: ChartRelease) -> None:
    pods = release.ready_pods()
    assert len(pods) == 2, "the chart's default: two replicas (README, High availability)"
    for pod in pods:
        assert pod.spec.node_name == REAL_NODE
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_SUBNET)
        (container,) = pod.status.container_statuses
        assert container.ready and container.state.running and container.restart_count == 0
        assert container.container_id.startswith("containerd://") and container.image_id
        assert container.image in (OPERATOR_IMAGE, OPERATOR_IMAGE.removeprefix("docker.io/library/"))
        # In-cluster config: the kubelet gave the container the `kubernetes` Service, not a kubeconfig.
        env = {e.name for e in pod.spec.containers[0].env or []}
        assert "KUBECONFIG" not in env and pod.spec.service_account_name == release.deployment


def _cache_manifest(hub: HuggingFaceHub) -> dict[str, Any]:
    return {"apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache", "metadata": {"name": CACHE},
            "spec": {"source": {"huggingface": {"repo": REPO, "endpoint": hub.url}}, "store": STORE,
                     "download": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS}}}


def test_webhooks_reached_at_the_pod_and_an_opted_in_pod_injected(
        release: ChartRelease, real_cluster: RealNodeCluster, hub: HuggingFaceHub) -> None:
    k8s = release.k8s
    volume = real_cluster.workdir / "chart-volume"
    volume.mkdir(exist_ok=True)
    k8s.ensure_namespace(NAMESPACE)
    wait_for(lambda: k8s.core.list_namespaced_service_account(NAMESPACE).items, 30, describe="namespace ready")
    # Both writes go through the chart's validating webhooks (failurePolicy Fail), answered by the pod.
    k8s.create_store({"apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelStore", "metadata": {"name": STORE},
                      "spec": {"hostPath": {"path": str(volume)}, "capacity": "10Gi",
                               "namespaceSelector": {"matchExpressions": [{
                                   "key": "kubernetes.io/metadata.name", "operator": "In",
                                   "values": [NAMESPACE]}]}}})
    try:
        k8s.wait_store_ready(STORE, timeout=60)
        k8s.create_cache(NAMESPACE, _cache_manifest(hub))
        cache = k8s.wait_phase(NAMESPACE, CACHE, "Ready", timeout=180, diagnostics=release.diagnostics)
        pod = k8s.core.create_namespaced_pod(NAMESPACE, {
            "metadata": {"name": "opted-in", "labels": {LABEL_INJECT: "true"}, "annotations": {ANN_CACHES: CACHE}},
            "spec": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS,
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "server", "image": SERVING_IMAGE, "args": ["$(MODEL_DIR)"]}]}})
        assert pod.metadata.annotations[ANN_INJECTED] == "true"
        mount = next(m for m in pod.spec.containers[0].volume_mounts if m.name == f"mc-{CACHE}")
        assert mount.read_only and mount.sub_path == cache["status"]["revisionPath"]
        assert pod.spec.containers[0].lifecycle.post_start is not None
        # The operator pod wrote the Job that ran the download in a container on the node.
        # (The cache is Ready once the downloader published; the Job completes when its container has exited.)
        def job_succeeded() -> Any:
            jobs = [j for j in k8s.download_jobs() if j.metadata.namespace == release.namespace]
            return jobs[0] if len(jobs) == 1 and jobs[0].status.succeeded == 1 else None

        job = wait_for(job_succeeded, 60, describe="the download Job succeeded", diagnostics=release.diagnostics)
        assert job.spec.template.spec.containers[0].image == OPERATOR_IMAGE
    finally:
        with contextlib.suppress(ApiException):  # not there when its creation was refused
            k8s.core.delete_namespaced_pod("opted-in", NAMESPACE, grace_period_seconds=0)
        k8s.delete_cache(NAMESPACE, CACHE)
        wait_for(lambda: k8s.get_cache(NAMESPACE, CACHE) is None or None, 60, describe="the cache deleted",
                 diagnostics=release.diagnostics)
        k8s.delete_store(STORE)
