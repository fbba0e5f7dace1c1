"""Cold start, the headline: R replicas of the serving stand-in start from one model served by a loopback hub
behind a rate-capped link (benchmarks/ratelink.py: every connection shares one budget, like a cluster's
egress to the internet), on the local control plane's real node, with the operator installed by Helm.

    .venv/bin/python benchmarks/cold_start.py [--model-mib 512] [--shards 4] [--rate-mibps 16] [--replicas 4]
        [--workdir /var/tmp/cold-start-bench] [--out BENCHMARKS.md]

Runs, in this order and in the same cluster:
  (a) self: each replica's init container downloads the model itself (huggingface_hub, 4 files at a time, the
      status quo) into an emptyDir, then the server loads it from there;
  (b) cache: a ModelCache (prewarm off) is applied; once it is Ready the host's page cache of the model is
      emptied (the files sit on the store, not in this node's memory) and the labelled StatefulSet applied;
  (c) cache+prewarm: the same with prewarm mode initContainer, so the server loads from a warm page cache;
  (t) tmpfs: the baseline for a replica's load: an init container copies the model into a memory-backed
      emptyDir, the server loads it from there.
For each: bytes the hub served, apply to all replicas Ready (for (b) and (c) from the ModelCache's apply, the
download included), and each replica's load time as the server logs it (safetensors load_file of every shard).

Needs root, like the real node. Writes (or replaces) the "## Cold start" section of --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ratelink import RateLink  # noqa: E402  (this directory, sys.path[0] of a script)
from tests.hubs.huggingface import HuggingFaceHub  # noqa: E402
from tests.residency import evict, files_under  # noqa: E402
from tests.support.chart_on_node import ChartRelease  # noqa: E402
from tests.support.kube import Cluster, wait_for  # noqa: E402
from tests.support.real_node import SERVING_IMAGE, build_images  # noqa: E402
from tests.support.real_node_flow import NODE_SELECTOR, TOLERATIONS, client_for  # noqa: E402

from modelcache_devcluster.binaries import ensure_binaries  # noqa: E402
from modelcache_devcluster.cluster import LocalCluster  # noqa: E402
from modelcache_devcluster.images import OPERATOR_IMAGE  # noqa: E402
from modelcache_devcluster.node import GATEWAY, ensure_node_binaries  # noqa: E402
from modelcache_operator.api.names import ANN_CACHES, ANN_PREWARM, LABEL_INJECT  # noqa: E402

MiB = 1 << 20
REPO = "bench/cold-start-model"
APP = "server"
LOADED = re.compile(r"serve: loaded \d+ tensors \((\d+) parameters\) from (\d+) files in \S+ in ([\d.]+)s")
# What a replica that fetches its own model runs: huggingface_hub, 4 files at a time (as snapshot_download
# would; the loopback hub has no tree listing, so the files come from model_info).
SELF_DOWNLOAD = """
import os, concurrent.futures as cf, huggingface_hub as hf
repo, endpoint = os.environ['REPO'], os.environ['HF_ENDPOINT']
files = [s.rfilename for s in hf.HfApi(endpoint=endpoint).model_info(repo).siblings]
with cf.ThreadPoolExecutor(4) as pool:
    list(pool.map(lambda f: hf.hf_hub_download(repo, f, local_dir='/models/model', endpoint=endpoint), files))
"""
SECTION = "## Cold start"


@dataclass(frozen=True)
class RunResult:
    name: str
    hub_bytes: int
    all_ready: float
    loads: list[float]


def log(message: str) -> None:
    print(f"[cold-start {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----- the model -----

def write_model(directory: Path, total: int, shards: int) -> dict[str, Path]:
    """`shards` safetensors files of one float32 tensor each, `total` bytes of weights (reused if present)."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    per_shard = total // shards // 4 * 4
    for index in range(shards):
        name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        path = directory / name
        header = json.dumps({f"layer{index}.weight": {"dtype": "F32", "shape": [per_shard // 4],
                                                       "data_offsets": [0, per_shard]}}).encode()
        header += b" " * (-len(header) % 8)
        size = 8 + len(header) + per_shard
        if not (path.exists() and path.stat().st_size == size):
            with path.open("wb") as out:
                out.write(struct.pack("<Q", len(header)) + header)
                for _ in range(per_shard // MiB):
                    out.write(os.urandom(MiB))
                out.write(os.urandom(per_shard % MiB))
        files[name] = path
    config = directory / "config.json"
    config.write_text(json.dumps({"architectures": ["ColdStartBench"], "shards": shards}))
    files["config.json"] = config
    return files


# ----- one run -----

def statefulset(name: str, replicas: int, template: dict[str, Any]) -> Any:
    return {"metadata": {"name": name},
            "spec": {"serviceName": name, "replicas": replicas, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": APP}}, "template": template}}


def server_container(model_dir: str) -> dict[str, Any]:
    return {"name": "server", "image": SERVING_IMAGE, "args": [model_dir],
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
            "resources": {"limits": {"memory": "4Gi"}}}


def wait_all_ready(k8s: Cluster, namespace: str, replicas: int, timeout: float) -> list[Any]:
    def ready() -> list[Any] | None:
        pods: list[Any] = k8s.core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items
        done = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        return done if len(done) == replicas else None

    def diagnostics() -> str:
        pods: list[Any] = k8s.core.list_namespaced_pod(namespace).items
        events = [f"{e.involved_object.name} {e.reason}: {e.message}" for e in k8s.events(namespace)][-15:]
        return "\n".join([*(f"{p.metadata.name}: {p.status.phase} {p.status.init_container_statuses}"
                            for p in pods), *events])

    return wait_for(ready, timeout, interval=0.25, describe=f"{replicas} pods Ready in {namespace}",
                    diagnostics=diagnostics)


def load_times(k8s: Cluster, namespace: str, pods: list[Any]) -> list[float]:
    times = []
    for pod in pods:
        text = k8s.core.read_namespaced_pod_log(pod.metadata.name, namespace, container="server")
        match = LOADED.search(text)
        if not match:
            raise RuntimeError(f"{pod.metadata.name}: no load line in {text!r}")
        times.append(float(match[3]))
    return sorted(times)


def fresh_namespace(k8s: Cluster, namespace: str) -> None:
    k8s.ensure_namespace(namespace, {"modelcache.dev/team": namespace})
    wait_for(lambda: k8s.core.list_namespaced_service_account(namespace).items, 30,
             describe=f"namespace {namespace} ready")


def run_self_download(k8s: Cluster, hub: HuggingFaceHub, endpoint: str, replicas: int, timeout: float) -> RunResult:
    namespace = "cold-a-self"
    fresh_namespace(k8s, namespace)
    template = {
        "metadata": {"labels": {"app": APP}},
        "spec": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS, "terminationGracePeriodSeconds": 1,
                 "initContainers": [{
                     "name": "download", "image": OPERATOR_IMAGE, "command": ["python3", "-c", SELF_DOWNLOAD],
                     "env": [{"name": "REPO", "value": REPO}, {"name": "HF_ENDPOINT", "value": endpoint},
                             {"name": "HF_HOME", "value": "/models/.hf"},
                             {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}],
                     "volumeMounts": [{"name": "models", "mountPath": "/models"}]}],
                 "containers": [{**server_container("/models/model"),
                                 "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}]}],
                 "volumes": [{"name": "models", "emptyDir": {}}]}}
    before = sum(hub.bytes_served.values())
    started = time.monotonic()
    k8s.apps.create_namespaced_stateful_set(namespace, statefulset(APP, replicas, template))
    pods = wait_all_ready(k8s, namespace, replicas, timeout)
    elapsed = time.monotonic() - started
    return RunResult("(a) every replica downloads", sum(hub.bytes_served.values()) - before, elapsed,
                     load_times(k8s, namespace, pods))


def run_through_cache(k8s: Cluster, hub: HuggingFaceHub, endpoint: str, *, replicas: int, workdir: Path,
                      prewarm: str, timeout: float) -> tuple[RunResult, Path]:
    """A store of its own (so the download is cold), the cache, then the StatefulSet once it is Ready and the
    host's page cache of the model is emptied. Returns the result and the revision's directory."""
    namespace = f"cold-{'c-prewarm' if prewarm != 'off' else 'b-cache'}"
    store, volume = namespace, workdir / namespace
    volume.mkdir(parents=True, exist_ok=True)
    fresh_namespace(k8s, namespace)
    k8s.create_store({"apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelStore", "metadata": {"name": store},
                      "spec": {"hostPath": {"path": str(volume)}, "capacity": "20Gi",
                               "namespaceSelector": {"matchExpressions": [{
                                   "key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}]}}})
    k8s.wait_store_ready(store, timeout=60)
    before = sum(hub.bytes_served.values())
    started = time.monotonic()
    k8s.create_cache(namespace, {
        "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache", "metadata": {"name": "model"},
        "spec": {"source": {"huggingface": {"repo": REPO, "endpoint": endpoint}}, "store": store,
                 "download": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS},
                 "prewarm": {"mode": prewarm, "concurrency": 4}}})
    cache = k8s.wait_phase(namespace, "model", "Ready", timeout=timeout)
    revision_dir = volume / "hf" / REPO / cache["status"]["revisionPath"]
    evict(files_under(revision_dir))
    template = {
        "metadata": {"labels": {"app": APP, LABEL_INJECT: "true"},
                     "annotations": {ANN_CACHES: "model", ANN_PREWARM: "off" if prewarm == "off" else "on"}},
        "spec": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS, "terminationGracePeriodSeconds": 1,
                 "containers": [server_container("$(MODEL_DIR)")]}}
    k8s.apps.create_namespaced_stateful_set(namespace, statefulset(APP, replicas, template))
    pods = wait_all_ready(k8s, namespace, replicas, timeout)
    elapsed = time.monotonic() - started
    name = "(c) ModelCache + prewarm" if prewarm != "off" else "(b) ModelCache, cold"
    return (RunResult(name, sum(hub.bytes_served.values()) - before, elapsed, load_times(k8s, namespace, pods)),
            revision_dir)


def run_tmpfs(k8s: Cluster, revision_dir: Path, replicas: int, timeout: float) -> RunResult:
    namespace = "cold-t-tmpfs"
    fresh_namespace(k8s, namespace)
    template = {
        "metadata": {"labels": {"app": APP}},
        "spec": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS, "terminationGracePeriodSeconds": 1,
                 "initContainers": [{
                     "name": "copy", "image": SERVING_IMAGE, "command": ["cp", "-r", "/source/.", "/models/"],
                     "volumeMounts": [{"name": "source", "mountPath": "/source", "readOnly": True},
                                      {"name": "models", "mountPath": "/models"}]}],
                 "containers": [{**server_container("/models"),
                                 "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}]}],
                 "volumes": [{"name": "source", "hostPath": {"path": str(revision_dir), "type": "Directory"}},
                             {"name": "models", "emptyDir": {"medium": "Memory"}}]}}
    started = time.monotonic()
    k8s.apps.create_namespaced_stateful_set(namespace, statefulset(APP, replicas, template))
    pods = wait_all_ready(k8s, namespace, replicas, timeout)
    return RunResult("(t) tmpfs baseline (load only)", 0, time.monotonic() - started,
                     load_times(k8s, namespace, pods))


def clean(k8s: Cluster, namespace: str) -> None:
    """Deletes the run's namespace (its pods' emptyDirs with it), so runs do not compete for memory or disk."""
    with contextlib.suppress(Exception):
        k8s.core.delete_namespace(namespace)
    wait_for(lambda: not k8s.core.list_namespaced_pod(namespace).items or None, 120,
             describe=f"pods of {namespace} gone")


# ----- report -----

def report(results: list[RunResult], model_bytes: int, args: argparse.Namespace, command: str) -> str:
    by = {r.name[:3]: r for r in results}
    a, b, c, t = by["(a)"], by["(b)"], by["(c)"], by["(t)"]
    rows = ["| run | hub bytes served | x model | apply → all Ready | load per replica (min / median / max) |",
            "|---|---:|---:|---:|---|"]
    for r in results:
        served = f"{r.hub_bytes / MiB:.0f} MiB" if r.name != t.name else "-"
        ratio = f"{r.hub_bytes / model_bytes:.2f}" if r.name != t.name else "-"
        loads = " / ".join(f"{x:.2f}s" for x in (min(r.loads), statistics.median(r.loads), max(r.loads)))
        rows.append(f"| {r.name} | {served} | {ratio} | {r.all_ready:.1f}s | {loads} |")
    load_c, load_t = statistics.median(c.loads), statistics.median(t.loads)
    goals = [
        f"- hub egress: ours {b.hub_bytes / model_bytes:.2f}x and {c.hub_bytes / model_bytes:.2f}x the model, "
        f"(a) {a.hub_bytes / model_bytes:.2f}x (goal 1x against {args.replicas}x)",
        f"- apply → all Ready: (a) / (b) = **{a.all_ready / b.all_ready:.2f}x**, (a) / (c) = "
        f"**{a.all_ready / c.all_ready:.2f}x** faster (goal ≥ 3x)",
        f"- load from the prewarmed cache / from tmpfs (medians): **{load_c / load_t:.2f}x** (goal ≤ 1.2x); "
        f"without prewarm, from a cold page cache: {statistics.median(b.loads) / load_t:.2f}x",
    ]
    return "\n".join([
        SECTION, "",
        f"`{command}` on this VM ({os.cpu_count()} cores, {_memory_gib():.0f} GiB, {platform.platform()}), "
        f"real node (containerd + runc + kubelet), operator installed by Helm as a Pod.",
        f"Model: {args.shards} safetensors shards, {model_bytes / MiB:.0f} MiB, on a loopback hub behind a link "
        f"capped at {args.rate_mibps} MiB/s shared by all connections; {args.replicas} replicas of the serving "
        "stand-in (safetensors `load_file` of every shard).", "",
        *rows, "", *goals, "",
        "(b) and (c) apply the StatefulSet once the cache is Ready, after emptying the host's page cache of the "
        "model (the files are on the store, not in this node's memory, as on a node that did not download them); "
        "their time to all Ready is counted from the ModelCache's apply and includes the one download. (a) loads "
        "what its own init container just wrote, from the page cache. (c) warms with prewarm mode "
        "initContainer, so the server starts on a warm page cache.", ""])


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / (1 << 20)
    return 0.0


def write_section(out: Path, section: str) -> None:
    text = out.read_text() if out.exists() else ""
    start = text.find(f"\n{SECTION}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start + 1] + section + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    out.write_text(text)


# ----- main -----

def run_all(cluster: LocalCluster, args: argparse.Namespace, model: dict[str, Path],
            phase: Callable[[str], None]) -> list[RunResult]:
    k8s = client_for(cluster)
    release = ChartRelease(cluster, k8s, args.workdir / "chart")
    phase("helm install of the chart (operator pod on the real node)")
    release.install()
    hub = HuggingFaceHub(host="127.0.0.1")
    hub.add_repo(REPO, dict(model))
    hub.start()
    hub_port = int(hub.url.rsplit(":", 1)[1])
    with RateLink((GATEWAY, 0), ("127.0.0.1", hub_port), args.rate_mibps * MiB) as link:
        endpoint = f"http://{link.address[0]}:{link.address[1]}"
        timeout = 600.0
        phase("(a) every replica downloads the model itself")
        results = [run_self_download(k8s, hub, endpoint, args.replicas, timeout)]
        clean(k8s, "cold-a-self")
        phase("(b) through a ModelCache, cold")
        cold, _ = run_through_cache(k8s, hub, endpoint, replicas=args.replicas, workdir=args.workdir,
                                    prewarm="off", timeout=timeout)
        results.append(cold)
        clean(k8s, "cold-b-cache")
        phase("(c) through a ModelCache with prewarm")
        warm, revision_dir = run_through_cache(k8s, hub, endpoint, replicas=args.replicas, workdir=args.workdir,
                                               prewarm="initContainer", timeout=timeout)
        results.append(warm)
        clean(k8s, "cold-c-prewarm")
        phase("(t) tmpfs baseline")
        results.append(run_tmpfs(k8s, revision_dir, args.replicas, timeout))
        clean(k8s, "cold-t-tmpfs")
    hub.stop()
    for r in results:
        log(f"{r.name}: hub {r.hub_bytes / MiB:.0f} MiB, all Ready {r.all_ready:.1f}s, loads {r.loads}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-mib", type=int, default=512)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rate-mibps", type=int, default=16)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/cold-start-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the benchmark runs a real kubelet node: run it as root", file=sys.stderr)
        return 1
    command = "python benchmarks/cold_start.py " + " ".join(sys.argv[1:])
    started = time.monotonic()
    model = write_model(args.workdir / "model", args.model_mib * MiB, args.shards)
    model_bytes = sum(p.stat().st_size for p in model.values())
    binaries = ensure_binaries()
    ensure_node_binaries()
    images = build_images()
    state = args.workdir / "cluster"
    if (state / "cluster.json").exists():
        LocalCluster(binaries, state).down()
    shutil.rmtree(state, ignore_errors=True)
    for stale in args.workdir.glob("cold-*"):
        shutil.rmtree(stale, ignore_errors=True)
    cluster = LocalCluster(binaries, state, real_node=True,
                           node_images=[images[n].archive for n in ("pause", "operator", "serving")])
    log("starting the control plane and the real node")
    cluster.up(timeout=180)
    try:
        results = run_all(cluster, args, model, log)
    finally:
        cluster.down()
        for stale in args.workdir.glob("cold-*"):
            shutil.rmtree(stale, ignore_errors=True)
    section = report(results, model_bytes, args, command.strip())
    print(section)
    write_section(args.out, section)
    log(f"done in {time.monotonic() - started:.0f}s; section written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
