"""The end-to-end demo with a real node: the download Job and the serving pod run in real containers.

Same cast as tests/support/demo_flow.py, but nothing runs on the host on a pod's behalf: the kubelet of the
cluster's real node (modelcache_devcluster.node) runs the download Job from the project's own image, reaching
the hub on the pod bridge's gateway address and the apiserver through the `kubernetes` Service address, and
writing to the hostPath volume; then the injected StatefulSet pod (serving stand-in image) starts there with
the cache mount and the postStart prewarm, and must become Ready. From the host, mincore checks that the
page cache holds the model files, and the hook's log is read from the log emptyDir under the kubelet's pod
dir.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from modelcache_devcluster.cluster import LocalCluster
from modelcache_devcluster.node import GATEWAY, REAL_NODE
from tests.hubs import package_model_files
from tests.hubs.huggingface import HuggingFaceHub
from tests.residency import resident_fraction
from tests.support.demo_flow import CACHE, CRD_DIR, NAMESPACE, REPO, create_store_and_namespace
from tests.support.kube import Cluster, wait_for
from tests.support.operator import OperatorProcess
from tests.support.real_node import SERVING_IMAGE
from tests.support.serving_pods import (
    NODE_SELECTOR,
    TOLERATIONS,
    evict_model_files,
    pod_log,
    prewarm_summary,
    start_serving,
)

# NODE_SELECTOR and TOLERATIONS too: the real-node tests import them from here.
__all__ = ["NODE_SELECTOR", "TOLERATIONS", "RealDemoResult", "RealNodeCluster", "client_for", "demo_services",
           "run_real_demo", "wait_job_pod"]


@dataclass(frozen=True)
class RealNodeCluster:
    cluster: LocalCluster
    k8s: Cluster
    workdir: Path


@dataclass(frozen=True)
class RealDemoResult:
    cache: dict[str, Any]
    job_pod: Any
    download_log: str
    pod: Any
    server_log: str
    volume: Path
    revision_dir: Path
    prewarm_line: str
    resident: float
    cold_resident: float


def client_for(cluster: LocalCluster) -> Cluster:
    return Cluster(kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=cluster.state.kubeconfig))


@contextlib.contextmanager
def demo_services(cluster: LocalCluster, workdir: Path, say: Callable[[str], None]
                  ) -> Iterator[tuple[Cluster, HuggingFaceHub, OperatorProcess]]:
    """The CRD, a hub on the pod bridge's gateway address, and the operator (image: the one on the node)."""
    k8s = client_for(cluster)
    cluster.install_crds(CRD_DIR)
    hub = HuggingFaceHub(host=GATEWAY)
    hub.add_repo(REPO, dict(package_model_files()))
    hub.start()
    say(f"Hugging Face protocol hub at {hub.url} (pod bridge gateway) with the real {REPO} files")
    operator = OperatorProcess(cluster.state.kubeconfig, workdir / "operator", resync_seconds=5,
                               allow_host_path=True)
    operator.start()
    try:
        yield k8s, hub, operator
    finally:
        operator.stop()
        hub.stop()


def wait_job_pod(k8s: Cluster, job: Any, operator_log: Callable[[], str], timeout: float = 300) -> Any:
    """The download Job's pod, once it has finished; operator_log tells what the operator saw meanwhile."""
    namespace, selector = job.metadata.namespace, f"job-name={job.metadata.name}"

    def job_pod_done() -> Any:
        pods = k8s.core.list_namespaced_pod(namespace, label_selector=selector).items
        return next((p for p in pods if p.status.phase in ("Succeeded", "Failed")), None)

    def diagnostics() -> str:
        pods = k8s.core.list_namespaced_pod(namespace, label_selector=selector).items
        return "\n".join(f"{p.metadata.name} {p.spec.node_name} {p.status.phase}: "
                         f"{pod_log(k8s, p.metadata.name, namespace)}" for p in pods) + "\n" + operator_log()

    return wait_for(job_pod_done, timeout, interval=1, describe="the download Job's pod to finish",
                    diagnostics=diagnostics)


def _download_job(k8s: Cluster) -> Any:
    """The Job of the demo cache's own ModelDownload (a module before may have left other download Jobs)."""
    ref = ((k8s.get_cache(NAMESPACE, CACHE) or {}).get("status") or {}).get("downloadRef")
    return next(iter(k8s.download_jobs(ref["name"])), None) if ref else None


def run_real_demo(cluster: LocalCluster, k8s: Cluster, hub: HuggingFaceHub, operator: OperatorProcess,
                  workdir: Path, say: Callable[[str], None]) -> RealDemoResult:
    volume = workdir / "volume"
    volume.mkdir(parents=True, exist_ok=True)
    create_store_and_namespace(k8s, volume, say)
    manifest = {
        "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache", "metadata": {"name": CACHE},
        "spec": {"source": {"huggingface": {"repo": REPO, "endpoint": hub.url}},
                 "download": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS,
                              "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                            "limits": {"memory": "2Gi"}}},
                 "prewarm": {"mode": "postStart", "concurrency": 4}},
    }
    say(f"kubectl apply ModelCache {CACHE} (default store, download Job on {REAL_NODE})")
    k8s.create_cache(NAMESPACE, manifest)
    job = wait_for(lambda: _download_job(k8s), 60, describe="the cache's download Job",
                   diagnostics=operator.log_tail)
    job_pod = wait_job_pod(k8s, job, operator.log_tail)
    download_log = pod_log(k8s, job_pod.metadata.name, job.metadata.namespace)
    for line in download_log.splitlines():
        say(f"  downloader[{job_pod.spec.node_name}]: {line}")
    if job_pod.status.phase != "Succeeded":
        raise RuntimeError(f"the download pod {job_pod.metadata.name} failed:\n{download_log[-3000:]}")
    cache = k8s.wait_phase(NAMESPACE, CACHE, "Ready", timeout=60, diagnostics=operator.log_tail)
    revision = cache["status"]["resolvedRevision"]
    revision_dir = volume / "hf" / REPO / cache["status"]["revisionPath"]
    files, cold = evict_model_files(revision_dir)
    say(f"cache Ready at {revision[:12]}; page cache emptied for {len(files)} model files ({cold:.0%} resident)")

    say(f"applying a labelled StatefulSet on {REAL_NODE} ({SERVING_IMAGE}); the webhook injects the cache")
    pod = start_serving(k8s, NAMESPACE, CACHE, 1, lambda: operator.log_tail(20), timeout=180)[0]
    resident = resident_fraction(files)
    server_log = pod_log(k8s, pod.metadata.name, NAMESPACE)
    say(f"pod {pod.metadata.name} Ready on {pod.spec.node_name}; server: {server_log.strip()}")
    prewarm_line = prewarm_summary(cluster, pod)
    say(f"  postStart log: {prewarm_line}")
    say(f"page-cache residency of the model files, checked with mincore on the host: {resident:.1%}")
    return RealDemoResult(cache=cache, job_pod=job_pod, download_log=download_log, pod=pod, server_log=server_log,
                          volume=volume, revision_dir=revision_dir, prewarm_line=prewarm_line, resident=resident,
                          cold_resident=cold)

