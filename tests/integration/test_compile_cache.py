"""The compile cache on the real control plane: a store with spec.compileCache gives a namespace one writable
claim on compile/<namespace> (once a Job made that folder exist), and serving pods pinned to two kwok GPU
pools of different products get two separate folders of it, each scheduled by the real scheduler onto its
own product's nodes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from modelcache_devcluster.cluster import LocalCluster
from modelcache_devcluster.kwok import FakeNode
from modelcache_operator.builders import compile_cache, naming
from tests.support.downloader_role import REVISION_A, publish_cache
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, nfs_store_manifest, wait_for
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration

H100, A100 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"
A100_POOL = (FakeNode("a100-node-0", 8, A100, "128", "1024Gi"), FakeNode("a100-node-1", 8, A100, "128", "1024Gi"))


@pytest.fixture
def a100_pool(k8s: Cluster, local_cluster: LocalCluster) -> Iterator[list[str]]:
    """A second GPU pool beside the dev cluster's H100 nodes; kwok takes over nodes with its annotation."""
    for node in A100_POOL:
        k8s.core.create_node(node.manifest())
    names = [n.name for n in A100_POOL]

    def ready() -> bool:
        nodes = [k8s.core.read_node(name) for name in names]
        return all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []) for n in nodes)
    wait_for(ready, 30, describe="the kwok A100 nodes Ready")
    yield names
    for name in names:
        k8s.core.delete_node(name)


@pytest.fixture
def store(k8s: Cluster, operator: OperatorProcess, namespace: str) -> Iterator[str]:
    name = f"nfs-{uuid.uuid4().hex[:6]}"
    k8s.create_store(nfs_store_manifest(name, [namespace], compileCache={"enabled": True, "sizeLimit": "20Gi"}))
    k8s.wait_store_ready(name, 60)
    yield name
    k8s.delete_store(name)


def server(name: str, product: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"modelcache.dev/inject": "true"},
                     "annotations": {"modelcache.dev/caches": "qwen"}},
        "spec": {"nodeSelector": {"nvidia.com/gpu.product": product},
                 "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9.1",
                                 "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
    }


def compile_mount(pod: Any) -> Any:
    return next((m for m in pod.spec.containers[0].volume_mounts if m.name == "mc-compile-cache"), None)


def test_two_gpu_pools_get_two_compile_folders(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                               local_cluster: LocalCluster, store: str, a100_pool: list[str]) -> None:
    k8s.create_cache(namespace, {
        "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache", "metadata": {"name": "qwen"},
        "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}, "store": store}})
    cache = publish_cache(k8s, local_cluster, namespace, "qwen", revision=REVISION_A, diagnostics=operator.log_tail)
    claim_name, pv_name = compile_cache.claim_names(namespace, store)
    # The claim is named only once the folder Job made compile/<namespace> exist on the store.
    cache = wait_for(lambda: (c := k8s.get_cache(namespace, "qwen")) and c["status"].get("compileCache") and c, 30,
                     describe="the compile claim in the cache's status", diagnostics=operator.log_tail)
    assert cache["status"]["compileCache"] == {"pvcName": claim_name, "sizeLimit": "20Gi", "rootOwned": False}
    job = k8s.batch.read_namespaced_job(compile_cache.folder_job_name(namespace, store), OPERATOR_NAMESPACE)
    assert job.status.succeeded == 1
    job_mount = job.spec.template.spec.containers[0].volume_mounts[0]
    assert job_mount.sub_path == f"compile/{namespace}"
    assert job.spec.template.spec.volumes[0].persistent_volume_claim.claim_name == naming.store_claim_name(store)
    claim = wait_for(lambda: (c := k8s.core.read_namespaced_persistent_volume_claim(claim_name, namespace))
                     and c.status.phase == "Bound" and c, 30, describe="the compile claim Bound")
    assert claim.spec.access_modes == ["ReadWriteMany"] and claim.spec.volume_name == pv_name
    volume = k8s.core.read_persistent_volume(pv_name)
    # The namespace's own folder, apart from the model folders (hf/...), writable.
    assert volume.spec.nfs.path == f"/exports/{store}/compile/{namespace}" and not volume.spec.nfs.read_only

    for name, product in (("on-h100", H100), ("on-a100", A100)):
        k8s.core.create_namespaced_pod(namespace, server(name, product))

    def scheduled() -> list[Any] | None:
        pods = [k8s.core.read_namespaced_pod(n, namespace) for n in ("on-h100", "on-a100")]
        return pods if all(p.status.phase == "Running" for p in pods) else None
    h100, a100 = wait_for(scheduled, 60, describe="both servers running", diagnostics=operator.log_tail)
    assert compile_mount(h100).sub_path == f"{H100}/vllm-v0.9.1"
    assert compile_mount(a100).sub_path == f"{A100}/vllm-v0.9.1"
    assert not compile_mount(h100).read_only
    for pod, product in ((h100, H100), (a100, A100)):
        node = k8s.core.read_node(pod.spec.node_name)
        assert node.metadata.labels["nvidia.com/gpu.product"] == product
        volume_of = {v.name: v for v in pod.spec.volumes}
        assert volume_of["mc-compile-cache"].persistent_volume_claim.claim_name == claim_name
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["TRITON_CACHE_DIR"] == "/var/cache/modelcache-compile/triton"
    assert a100.spec.node_name in a100_pool and h100.spec.node_name not in a100_pool
