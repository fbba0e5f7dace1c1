"""The compile cache on the real node: the operator image's init container prepares the pod's folder on a
hostPath store, the serving stand-in (real container, real kubelet) compiles and writes its kernel there,
and a second pod on a node of the same GPU product reuses it at start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcache_devcluster.node import REAL_NODE
from tests.support.demo_flow import REPO
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import OperatorProcess
from tests.support.real_node import SERVING_IMAGE
from tests.support.real_node_flow import NODE_SELECTOR, TOLERATIONS, RealNodeCluster, demo_services

pytestmark = pytest.mark.integration

NAMESPACE, STORE, CACHE = "compile", "compile-store", "minilm"
PRODUCT = "NVIDIA-L4"  # what GPU feature discovery would label the node with
ENGINE = "vllm:standin-1"
KEY = f"{PRODUCT}/vllm-standin-1"


@pytest.fixture(scope="module")
def services(real_cluster: RealNodeCluster) -> Iterator[tuple[Cluster, OperatorProcess, Path]]:
    volume = real_cluster.workdir / "compile-volume"
    volume.mkdir(parents=True, exist_ok=True)
    with demo_services(real_cluster.cluster, real_cluster.workdir / "compile", lambda _: None) as (k8s, hub, op):
        k8s.ensure_namespace(OPERATOR_NAMESPACE)
        k8s.create_store({
            "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelStore", "metadata": {"name": STORE},
            "spec": {"hostPath": {"path": str(volume)}, "capacity": "10Gi",
                     "compileCache": {"enabled": True, "sizeLimit": "1Gi"},
                     "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}}})
        k8s.wait_store_ready(STORE)
        k8s.ensure_namespace(NAMESPACE)
        wait_for(lambda: k8s.core.list_namespaced_service_account(NAMESPACE).items, 30, describe="namespace")
        k8s.create_cache(NAMESPACE, {
            "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache", "metadata": {"name": CACHE},
            "spec": {"source": {"huggingface": {"repo": REPO, "endpoint": hub.url}}, "store": STORE,
                     "download": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS},
                     "prewarm": {"mode": "off"}}})
        k8s.wait_phase(NAMESPACE, CACHE, "Ready", timeout=300, diagnostics=op.log_tail)
        k8s.core.patch_node(REAL_NODE, {"metadata": {"labels": {"nvidia.com/gpu.product": PRODUCT}}})
        try:
            yield k8s, op, volume
        finally:
            k8s.core.patch_node(REAL_NODE, {"metadata": {"labels": {"nvidia.com/gpu.product": None}}})


def start_server(k8s: Cluster, operator: OperatorProcess, name: str) -> tuple[Any, str]:
    k8s.core.create_namespaced_pod(NAMESPACE, {
        "metadata": {"name": name, "labels": {"modelcache.dev/inject": "true"},
                     "annotations": {"modelcache.dev/caches": CACHE, "modelcache.dev/engine": ENGINE}},
        "spec": {"nodeSelector": {**NODE_SELECTOR, "nvidia.com/gpu.product": PRODUCT}, "tolerations": TOLERATIONS,
                 "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "server", "image": SERVING_IMAGE, "args": ["$(MODEL_DIR)"],
                                 "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
                                 "resources": {"limits": {"memory": "2Gi"}}}]}})

    def ready() -> Any:
        pod = k8s.core.read_namespaced_pod(name, NAMESPACE)
        return pod if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []) else None

    def diagnostics() -> str:
        pod = k8s.core.read_namespaced_pod(name, NAMESPACE)
        events = [f"{e.reason}: {e.message}" for e in k8s.events(NAMESPACE)][-10:]
        return "\n".join([str(pod.status), *events, operator.log_tail(20)])
    pod = wait_for(ready, 180, interval=1, describe=f"{name} Ready on the real node", diagnostics=diagnostics)
    return pod, str(k8s.core.read_namespaced_pod_log(name, NAMESPACE, container="server"))


def test_a_compiled_kernel_is_written_once_and_read_by_the_next_pod(
        services: tuple[Cluster, OperatorProcess, Path]) -> None:
    k8s, operator, volume = services
    first, first_log = start_server(k8s, operator, "first")
    assert first.spec.node_name == REAL_NODE
    mount = next(m for m in first.spec.containers[0].volume_mounts if m.name == "mc-compile-cache")
    assert mount.sub_path == KEY and not mount.read_only
    assert "serve: compile cache miss: compiled and wrote /var/cache/modelcache-compile/triton/" in first_log
    prepare_log = k8s.core.read_namespaced_pod_log("first", NAMESPACE, container="modelcache-compile-cache")
    assert f"modelcache compile-cache: {KEY} ready; evicted 0 folder(s)" in prepare_log
    # On the store, in the namespace's folder beside (not inside) the model folders.
    kernels = list((volume / "compile" / NAMESPACE / KEY / "triton").glob("*/kernel.json"))
    assert len(kernels) == 1, kernels
    assert '"compiled_by": "first"' in kernels[0].read_text()
    assert (volume / "compile" / NAMESPACE / KEY / ".last-used").exists()
    assert not any((volume / "hf").rglob("kernel.json"))

    second, second_log = start_server(k8s, operator, "second")
    assert second.spec.node_name == REAL_NODE
    assert f"serve: compile cache hit: /var/cache/modelcache-compile/triton/{kernels[0].parent.name}/kernel.json" \
           in second_log, second_log
    assert '"compiled_by": "first"' in second_log
    assert len(list((volume / "compile" / NAMESPACE / KEY / "triton").glob("*/kernel.json"))) == 1
