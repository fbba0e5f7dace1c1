"""Webhook admission latency: bursts of concurrent pod creations against the real local control plane
with the operator's pod webhook registered, against two baselines measured in the same run.

    .venv/bin/python benchmarks/webhook_latency.py [--bursts 100 300] [--workers 16] [--reps 2] [--out BENCHMARKS.md]

Baselines: the same burst with the webhook pointed at a no-op webhook written in Go (noop_webhook/, allows
everything, patches nothing: the floor any webhook pays on this apiserver and machine), and unlabelled pods,
which the objectSelector keeps from any webhook. Bursts alternate ours / no-op, `--reps` times each.

Reports, per burst size: the apiserver's own `apiserver_admission_webhook_admission_duration_seconds` for
the pod webhook (quantiles interpolated from bucket deltas), client-side create latency, and the webhook
process's `modelcache_webhook_duration_seconds`. Appends a "## Webhook admission latency" section to --out.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import os
import platform
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import kubernetes
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.downloader_role import publish_cache  # noqa: E402
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, nfs_store_manifest, wait_for  # noqa: E402
from tests.support.operator import WEBHOOK_CONFIG_NAME, OperatorProcess  # noqa: E402

from modelcache_devcluster.binaries import cache_root, ensure_binaries  # noqa: E402
from modelcache_devcluster.cluster import LocalCluster, free_port  # noqa: E402
from modelcache_operator.api.names import API_VERSION  # noqa: E402
from modelcache_operator.webhook.server import POD_WEBHOOK_ID  # noqa: E402

CRD_DIR = ROOT / "crds"
APISERVER_METRIC = "apiserver_admission_webhook_admission_duration_seconds"
OPERATOR_METRIC = "modelcache_webhook_duration_seconds"
GOAL_P99 = 0.020
CACHE = "bench"
STORE = "bench"
NOOP_SOURCE = ROOT / "benchmarks" / "noop_webhook"
# Buckets: upper bound -> cumulative count.
Buckets = dict[float, float]


def histogram(text: str, metric: str, keep: Callable[[dict[str, str]], bool]) -> Buckets:
    """Cumulative buckets of one histogram, summed over the label sets `keep` accepts."""
    out: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name == f"{metric}_bucket" and keep(sample.labels):
                le = float(sample.labels["le"])
                out[le] = out.get(le, 0.0) + sample.value
    return out


def delta(after: Buckets, before: Buckets) -> Buckets:
    return {le: n - before.get(le, 0.0) for le, n in after.items()}


def quantile(q: float, buckets: Buckets) -> float:
    """histogram_quantile(): linear interpolation inside the bucket holding rank q (upper bound if +Inf)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le in bounds:
        if buckets[le] >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_n) / max(buckets[le] - prev_n, 1e-12)
        prev_le, prev_n = le, buckets[le]
    return bounds[-1]


def share_within(limit: float, buckets: Buckets) -> float:
    """Fraction of observations in buckets with upper bound <= limit (exact at bucket bounds)."""
    total = buckets.get(math.inf, 0.0)
    below = max((n for le, n in buckets.items() if le <= limit), default=0.0)
    return below / total if total else math.nan


def scrape_apiserver(cluster: LocalCluster) -> str:
    pki = cluster.state.pki
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(f"{cluster.state.server}/metrics", context=ctx, timeout=10) as r:
        return str(r.read().decode())


def pod(name: str, labelled: bool) -> Any:  # a plain dict; the client's stubs ask for V1Pod
    return {
        "metadata": {"name": name, "labels": {"modelcache.dev/inject": "true"} if labelled else {"app": "plain"},
                     "annotations": {"modelcache.dev/caches": CACHE}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai", "args": ["--model", "$(MODEL_DIR)"],
                                 "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "16Gi"}}}]},
    }


def burst(k8s: Cluster, namespace: str, n: int, labelled: bool, workers: int) -> list[float]:
    """Creates n pods at once from a thread pool; returns each create call's latency (seconds)."""
    prefix = f"{'in' if labelled else 'un'}-{uuid.uuid4().hex[:6]}"

    def create(i: int) -> float:
        t0 = time.perf_counter()
        k8s.core.create_namespaced_pod(namespace, pod(f"{prefix}-{i}", labelled))
        return time.perf_counter() - t0

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(create, range(n)))


def service_times(operator: OperatorProcess, namespace: str, n: int = 200,
                  warmup: int = 20) -> tuple[list[float], bytes]:
    """The webhook's own service time: AdmissionReviews POSTed one at a time over one keep-alive TLS
    connection, straight to the webhook process, with nothing else creating pods. Also returns the JSON
    patch it computed for the benchmark pod."""
    review_pod = {"apiVersion": "v1", "kind": "Pod", **pod("direct", True)}
    review_pod["metadata"]["namespace"] = namespace
    connection = http.client.HTTPSConnection("127.0.0.1", operator.webhook_port,
                                             context=ssl.create_default_context(cafile=str(operator.cert)))
    times = []
    for i in range(n + warmup):
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": namespace,
            "operation": "CREATE", "userInfo": {"username": "bench"}, "object": review_pod, "dryRun": False}})
        t0 = time.perf_counter()
        connection.request("POST", f"/{POD_WEBHOOK_ID}", body=body, headers={"Content-Type": "application/json"})
        response = json.loads(connection.getresponse().read())["response"]
        elapsed = time.perf_counter() - t0
        assert response["allowed"] and response.get("patch"), response  # really injected, not refused
        if i >= warmup:
            times.append(elapsed)
    connection.close()
    return times, base64.b64decode(response["patch"])


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]


def ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x * 1000:.1f}"


def add(a: Buckets, b: Buckets) -> Buckets:
    return {le: a.get(le, 0.0) + b.get(le, 0.0) for le in set(a) | set(b)}


def probe(k8s: Cluster, namespace: str, operator: OperatorProcess) -> tuple[bool, bool]:
    """Creates one labelled pod: (was it injected, did our webhook process see it)."""
    def ours_calls() -> float:
        return histogram(operator.webhook_metrics(), OPERATOR_METRIC, lambda _: True).get(math.inf, 0.0)

    before = ours_calls()
    name = f"probe-{uuid.uuid4().hex[:8]}"
    created = k8s.core.create_namespaced_pod(namespace, pod(name, True))
    k8s.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    annotations = (created.metadata.annotations if created.metadata else None) or {}
    return annotations.get("modelcache.dev/injected") == "true", ours_calls() > before


def clean_pods(k8s: Cluster, namespace: str) -> None:
    """Deletes the burst's pods so every burst starts from the same apiserver and kwok load."""
    k8s.core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    wait_for(lambda: not k8s.core.list_namespaced_pod(namespace).items, 120, describe="the burst's pods gone")


class FloorWebhook:
    def __init__(self, process: subprocess.Popen[bytes], port: int):
        self.process, self.port = process, port

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def start_floor_webhook(cert: Path, key: Path, patch_file: Path | None = None) -> FloorWebhook:
    """The Go no-op webhook; with patch_file it replays that patch to every request."""
    binary = cache_root() / "bench" / "noop-webhook"
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=NOOP_SOURCE, check=True)
    port = free_port()
    process = subprocess.Popen([str(binary), f"127.0.0.1:{port}", str(cert), str(key),
                                *([str(patch_file)] if patch_file else [])])
    wait_for(lambda: listening(port) or process.poll() is not None, 30, describe="the no-op webhook")
    if process.poll() is not None:
        raise RuntimeError(f"the no-op webhook exited with {process.returncode}")
    return FloorWebhook(process, port)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def run(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    cluster = LocalCluster(ensure_binaries(), workdir / "cluster")
    cluster.up()
    operator: OperatorProcess | None = None
    try:
        cluster.install_crds(CRD_DIR)
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=cluster.state.kubeconfig,  # type: ignore[no-untyped-call]
                                           client_configuration=config)
        config.connection_pool_maxsize = args.workers  # one connection per worker thread
        k8s = Cluster(kubernetes.client.ApiClient(config))
        operator = OperatorProcess(cluster.state.kubeconfig, workdir / "operator")
        operator.start()
        admission = kubernetes.client.AdmissionregistrationV1Api(k8s.client)
        wait_for(lambda: admission.read_mutating_webhook_configuration(WEBHOOK_CONFIG_NAME).webhooks, 30,
                 describe="the operator's webhook configuration", diagnostics=operator.log_tail)
        namespace = "bench"
        for name in (namespace, OPERATOR_NAMESPACE):  # the operator keeps shared downloads in its own
            k8s.core.create_namespace(cast(Any, {"metadata": {"name": name}}))
        wait_for(lambda: k8s.core.list_namespaced_service_account(
            namespace, field_selector="metadata.name=default").items, 30, describe="default ServiceAccount")
        k8s.create_store(nfs_store_manifest(STORE, [namespace]))
        k8s.wait_store_ready(STORE, 60)
        k8s.create_cache(namespace, {
            "apiVersion": API_VERSION, "kind": "ModelCache", "metadata": {"name": CACHE},
            "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}, "store": STORE,
                     "serving": {"notReadyPolicy": "wait"}}})
        publish_cache(k8s, cluster, namespace, CACHE, size=2 * 1024**3, diagnostics=operator.log_tail)

        def ours(labels: dict[str, str]) -> bool:
            return POD_WEBHOOK_ID in labels.get("name", "")

        direct, patch = service_times(operator, namespace)
        print(f"direct service time: p50 {ms(pct(direct, .5))} p99 {ms(pct(direct, .99))} ms", flush=True)
        (workdir / "patch.json").write_bytes(patch)
        floors = [start_floor_webhook(operator.cert, operator.key),
                  start_floor_webhook(operator.cert, operator.key, workdir / "patch.json")]
        try:
            targets = {"ours": operator.webhook_port, "noop": floors[0].port, "replay": floors[1].port}
            # (injected, seen by our webhook process) for a probe pod, per target
            expected = {"ours": (True, True), "noop": (False, False), "replay": (True, False)}

            def point_webhook_at(name: str) -> None:
                port = targets[name]
                config = admission.read_mutating_webhook_configuration(WEBHOOK_CONFIG_NAME)
                for hook in config.webhooks or []:
                    hook.client_config.url = f"https://127.0.0.1:{port}/{POD_WEBHOOK_ID}"
                admission.replace_mutating_webhook_configuration(WEBHOOK_CONFIG_NAME, config)
                # The apiserver picks up webhook configuration changes from its informer: wait until a
                # fresh pod provably went through the intended server.
                wait_for(lambda: probe(k8s, namespace, operator) == expected[name], 30,
                         describe=f"the webhook configuration to point at {name}")

            # Warm-up: first TLS handshakes and code paths, excluded from the numbers.
            for name in targets:
                point_webhook_at(name)
                burst(k8s, namespace, args.workers, True, args.workers)
            burst(k8s, namespace, args.workers, False, args.workers)
            clean_pods(k8s, namespace)
            results: list[dict[str, Any]] = [{"n": 0, "direct": direct}]
            for n in args.bursts:
                row: dict[str, Any] = {"n": n, "unlabelled": []}
                for name in targets:
                    row[name] = {"api": {}, "op": {}, "client": []}
                for _ in range(args.reps):
                    for name in targets:
                        point_webhook_at(name)
                        api_before = histogram(scrape_apiserver(cluster), APISERVER_METRIC, ours)
                        op_before = histogram(operator.webhook_metrics(), OPERATOR_METRIC, lambda _: True)
                        row[name]["client"] += burst(k8s, namespace, n, True, args.workers)
                        api = delta(histogram(scrape_apiserver(cluster), APISERVER_METRIC, ours), api_before)
                        op = delta(histogram(operator.webhook_metrics(), OPERATOR_METRIC, lambda _: True), op_before)
                        row[name]["api"] = add(row[name]["api"], api)
                        row[name]["op"] = add(row[name]["op"], op)
                        assert api.get(math.inf, 0) == n, f"{api.get(math.inf, 0)} of {n} calls in {name}'s burst"
                        clean_pods(k8s, namespace)
                    row["unlabelled"] += burst(k8s, namespace, n, False, args.workers)
                    clean_pods(k8s, namespace)
                results.append(row)
                for name in targets:
                    api = row[name]["api"]
                    print(f"N={n} {name}: apiserver p50 {ms(quantile(0.5, api))} p99 {ms(quantile(0.99, api))} ms "
                          f"(calls {api.get(math.inf, 0):.0f}, <=5ms {share_within(0.005, api):.1%}, "
                          f"<=25ms {share_within(0.025, api):.1%}); client p50 {ms(pct(row[name]['client'], .5))} "
                          f"p99 {ms(pct(row[name]['client'], .99))}", flush=True)
        finally:
            for floor in floors:
                floor.stop()
        return results
    finally:
        if operator is not None:
            operator.stop()
        cluster.down()


def write_report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    def sh(cmd: str) -> str:
        return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=False).stdout.strip()

    lines = [
        "## Webhook admission latency",
        "",
        f"Command: `flock /tmp/modelcache-bench.lock .venv/bin/python benchmarks/webhook_latency.py --bursts "
        f"{' '.join(map(str, args.bursts))} --workers {args.workers} --reps {args.reps}`",
        "",
        f"Machine: {sh('nproc')} cores, `{sh('free -h | grep Mem')}`, kernel {platform.release()}, "
        f"Python {platform.python_version()}, load average before the run: {args.load_before}. Everything on "
        "the same cores: etcd, kube-apiserver, controller-manager, scheduler, kwok, the operator (kopf) and its "
        "webhook process (TLS), and the client creating pods from a thread pool of "
        f"{args.workers} threads. One Ready ModelCache; every labelled pod (`modelcache.dev/inject: \"true\"`, "
        "annotation `modelcache.dev/caches`) is injected by ours.",
        "",
        "Baselines in the same run, with the webhook configuration pointed at `benchmarks/noop_webhook` (Go): "
        "**no-op** allows everything and patches nothing (the floor of any webhook here); **replay** answers "
        "every pod with the very patch ours computes for it, captured at the start of the run (so it is the "
        "floor of any webhook that injects what we inject: the apiserver's cost of decoding and applying the "
        "patch is inside its admission duration); **unlabelled** = the same number of pods the objectSelector "
        f"keeps from any webhook. Bursts alternate ours / replay / no-op, {args.reps} of each per N, pods "
        "deleted between bursts.",
        "",
        "Sources: **apiserver** = `apiserver_admission_webhook_admission_duration_seconds` for the pod "
        "webhook, bucket deltas over the bursts (buckets 5, 25, 100, 500 ms, ..., so p50/p99 are linear "
        "interpolations inside a bucket, and the share of calls <= 5 / <= 25 ms is exact); **client** = wall "
        "time of each create call; **handler** = `modelcache_webhook_duration_seconds` (time in `mutate_pod`).",
        "",
        "| N | webhook | apiserver p50 / p99 ms | calls <= 5 ms / <= 25 ms | client create p50 / p99 ms "
        "| handler p50 / p99 ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    verdicts = []
    for r in results[1:]:
        for name in ("ours", "replay", "noop"):
            api, client = r[name]["api"], r[name]["client"]
            handler = (f"{ms(quantile(0.5, r[name]['op']))} / {ms(quantile(0.99, r[name]['op']))}"
                       if name == "ours" else "-")
            lines.append(
                f"| {r['n']} | {name} | {ms(quantile(0.5, api))} / {ms(quantile(0.99, api))} | "
                f"{share_within(0.005, api):.1%} / {share_within(0.025, api):.1%} | "
                f"{ms(pct(client, .5))} / {ms(pct(client, .99))} | {handler} |")
        lines.append(f"| {r['n']} | unlabelled (none) | - | - | {ms(pct(r['unlabelled'], .5))} / "
                     f"{ms(pct(r['unlabelled'], .99))} | - |")
        p50 = {name: quantile(0.5, r[name]["api"]) for name in ("ours", "replay", "noop")}
        p99 = {name: quantile(0.99, r[name]["api"]) for name in ("ours", "replay", "noop")}
        verdicts.append(
            f"N={r['n']}: p99 {'met' if p99['ours'] < GOAL_P99 else 'NOT met'} (ours {ms(p99['ours'])} ms; "
            f"floors: replay {ms(p99['replay'])} ms, no-op {ms(p99['noop'])} ms). Ratios ours / replay: "
            f"p50 {p50['ours'] / p50['replay']:.2f}x, p99 {p99['ours'] / p99['replay']:.2f}x; ours / no-op: "
            f"p50 {p50['ours'] / p50['noop']:.2f}x, p99 {p99['ours'] / p99['noop']:.2f}x")
    direct = results[0]["direct"]
    lines += ["", f"Goal p99 < {GOAL_P99 * 1000:.0f} ms: " + "; ".join(verdicts) + ".", "",
              f"The webhook's own service time, same run: {len(direct)} AdmissionReviews sent one at a time "
              "straight to the webhook process over one keep-alive TLS connection, no burst running: "
              f"p50 {ms(pct(direct, .5))} ms, p99 {ms(pct(direct, .99))} ms.", ""]
    text = "\n".join(lines) + "\n"
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(("\n" if args.out.exists() and args.out.stat().st_size else "") + text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bursts", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2, help="bursts per N and webhook, alternating")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--no-report", action="store_true", help="print the numbers only")
    args = ap.parse_args()
    args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        results = run(args, Path(tmp))
    if not args.no_report:
        write_report(args, results)


if __name__ == "__main__":
    main()
