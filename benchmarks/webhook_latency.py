"""Webhook admission latency: bursts of concurrent pod creations against the real local control plane
with the operator's pod webhook registered, labelled (sent to the webhook) vs unlabelled (never sent).

    .venv/bin/python benchmarks/webhook_latency.py [--bursts 100 300] [--workers 16] [--out BENCHMARKS.md]

Reports, per burst: the apiserver's own `apiserver_admission_webhook_admission_duration_seconds` for
our webhook (quantiles interpolated from bucket deltas over the burst), client-side create latency of
labelled vs unlabelled pods, and the operator's `modelcache_webhook_duration_seconds`. Appends a
"## Webhook admission latency" section to --out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import platform
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

from tests.support.downloader_role import downloader_reporter, publish  # noqa: E402
from tests.support.kube import Cluster, wait_for  # noqa: E402
from tests.support.operator import WEBHOOK_CONFIG_NAME, OperatorProcess  # noqa: E402

from modelcache_devcluster.binaries import ensure_binaries  # noqa: E402
from modelcache_devcluster.cluster import LocalCluster  # noqa: E402
from modelcache_operator.webhook.server import POD_WEBHOOK_ID  # noqa: E402

CRD_FILE = ROOT / "crds" / "modelcache.dev_modelcaches.yaml"
APISERVER_METRIC = "apiserver_admission_webhook_admission_duration_seconds"
OPERATOR_METRIC = "modelcache_webhook_duration_seconds"
GOAL_P99 = 0.020
CACHE = "bench"
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


def service_times(operator: OperatorProcess, namespace: str, n: int = 200, warmup: int = 20) -> list[float]:
    """The webhook's own service time: AdmissionReviews POSTed one at a time over one keep-alive TLS
    connection, straight to the operator, with nothing else creating pods."""
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
    return times


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]


def ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x * 1000:.1f}"


def run(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    cluster = LocalCluster(ensure_binaries(), workdir / "cluster")
    cluster.up()
    operator: OperatorProcess | None = None
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modelcaches.modelcache.dev")
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
        k8s.core.create_namespace(cast(Any, {"metadata": {"name": namespace}}))
        wait_for(lambda: k8s.core.list_namespaced_service_account(
            namespace, field_selector="metadata.name=default").items, 30, describe="default ServiceAccount")
        k8s.create_cache(namespace, {
            "apiVersion": "modelcache.dev/v1alpha1", "kind": "ModelCache", "metadata": {"name": CACHE},
            "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}},
                     "storage": {"nfs": {"server": "10.0.0.2", "path": "/exports/bench"}, "capacity": "10Gi"},
                     "serving": {"notReadyPolicy": "wait"}}})
        job = wait_for(lambda: next(iter(k8s.jobs(namespace, CACHE)), None), 30, describe="download Job")
        publish(downloader_reporter(k8s, cluster, namespace, CACHE), job.metadata.name, size=2 * 1024**3)
        k8s.wait_phase(namespace, CACHE, "Ready")

        def ours(labels: dict[str, str]) -> bool:
            return POD_WEBHOOK_ID in labels.get("name", "")

        # Warm-up: first TLS handshakes and code paths, excluded from the numbers.
        burst(k8s, namespace, args.workers, True, args.workers)
        burst(k8s, namespace, args.workers, False, args.workers)
        created = args.workers  # labelled pods so far
        direct = service_times(operator, namespace)
        print(f"direct service time: p50 {ms(pct(direct, .5))} p99 {ms(pct(direct, .99))} ms", flush=True)
        results: list[dict[str, Any]] = [{"n": 0, "direct": direct}]
        for n in args.bursts:
            api_before = histogram(scrape_apiserver(cluster), APISERVER_METRIC, ours)
            op_before = histogram(operator.metrics(), OPERATOR_METRIC, lambda _: True)
            labelled = burst(k8s, namespace, n, True, args.workers)
            api = delta(histogram(scrape_apiserver(cluster), APISERVER_METRIC, ours), api_before)
            op = delta(histogram(operator.metrics(), OPERATOR_METRIC, lambda _: True), op_before)
            unlabelled = burst(k8s, namespace, n, False, args.workers)
            listed = k8s.core.list_namespaced_pod(namespace, label_selector="modelcache.dev/inject=true").items
            injected = [p for p in listed
                        if p.metadata and (p.metadata.annotations or {}).get("modelcache.dev/injected") == "true"]
            # Every labelled pod must have gone through the webhook, or the numbers mean nothing.
            created += n
            assert len(injected) == created, f"{len(injected)} of {created} labelled pods injected"
            row = {"n": n, "api": api, "op": op, "labelled": labelled, "unlabelled": unlabelled}
            results.append(row)
            print(f"N={n}: apiserver p50 {ms(quantile(0.5, api))} p99 {ms(quantile(0.99, api))} ms "
                  f"(calls {api.get(math.inf, 0):.0f}, <=5ms {share_within(0.005, api):.1%}, "
                  f"<=25ms {share_within(0.025, api):.1%}); client labelled p50 {ms(pct(labelled, .5))} "
                  f"p99 {ms(pct(labelled, .99))}, unlabelled p50 {ms(pct(unlabelled, .5))} "
                  f"p99 {ms(pct(unlabelled, .99))}; operator p50 {ms(quantile(0.5, op))} "
                  f"p99 {ms(quantile(0.99, op))}", flush=True)
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
        f"Command: `.venv/bin/python benchmarks/webhook_latency.py --bursts {' '.join(map(str, args.bursts))} "
        f"--workers {args.workers}`",
        "",
        f"Machine: {sh('nproc')} cores, `{sh('free -h | grep Mem')}`, kernel {platform.release()}, "
        f"Python {platform.python_version()}. Everything on the same 2 cores: etcd, kube-apiserver, "
        "controller-manager, scheduler, kwok, the operator (kopf, webhook on TLS, managed webhook "
        "configuration) and the client creating pods from a thread pool of "
        f"{args.workers} threads. One Ready ModelCache; each burst of N labelled pods "
        "(`modelcache.dev/inject: \"true\"`, annotation `modelcache.dev/caches`) is followed by N "
        "unlabelled pods (the objectSelector keeps them from the webhook) as the baseline.",
        "",
        "Sources: **apiserver** = `apiserver_admission_webhook_admission_duration_seconds` for the pod "
        "webhook, bucket deltas over the burst (its buckets are 5, 25, 100, 500 ms, ..., so quantiles "
        "are linear interpolations inside a bucket; the share of calls <= 5 ms / <= 25 ms is exact); "
        "**client** = wall time of each create call; **operator** = `modelcache_webhook_duration_seconds` "
        "(time inside `inject_pod`, excluding kopf/aiohttp/TLS).",
        "",
        "| N | apiserver webhook p50 / p99 ms | calls <= 5 ms / <= 25 ms | client labelled p50 / p99 ms "
        "| client unlabelled p50 / p99 ms | labelled / unlabelled (p50, p99) | operator handler p50 / p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts = []
    direct = results[0]["direct"]
    for r in results[1:]:
        api, op, lab, unl = r["api"], r["op"], r["labelled"], r["unlabelled"]
        p99 = quantile(0.99, api)
        lines.append(
            f"| {r['n']} | {ms(quantile(0.5, api))} / {ms(p99)} | {share_within(0.005, api):.1%} / "
            f"{share_within(0.025, api):.1%} | {ms(pct(lab, .5))} / {ms(pct(lab, .99))} | "
            f"{ms(pct(unl, .5))} / {ms(pct(unl, .99))} | {pct(lab, .5) / pct(unl, .5):.2f}x, "
            f"{pct(lab, .99) / pct(unl, .99):.2f}x | {ms(quantile(0.5, op))} / {ms(quantile(0.99, op))} |")
        verdicts.append(f"N={r['n']}: {'met' if p99 < GOAL_P99 else 'NOT met'} (apiserver p99 {ms(p99)} ms, "
                        f"{share_within(0.005, api):.1%} of calls <= 5 ms)")
    lines += ["", f"Goal p99 < {GOAL_P99 * 1000:.0f} ms: " + "; ".join(verdicts) + ".", "",
              f"The webhook's own service time, measured in the same run: {len(direct)} AdmissionReviews sent one "
              "at a time straight to the operator over one keep-alive TLS connection (kopf, aiohttp, "
              f"`mutate_pod`, JSON patch), with no burst running: p50 {ms(pct(direct, .5))} ms, "
              f"p99 {ms(pct(direct, .99))} ms "
              f"({'meets' if pct(direct, .99) < GOAL_P99 else 'misses'} the goal). The difference to the burst numbers "
              "is queueing on the 2 cores shared by the whole control plane, the operator and the client.", ""]
    text = "\n".join(lines) + "\n"
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(("\n" if args.out.exists() and args.out.stat().st_size else "") + text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bursts", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--no-report", action="store_true", help="print the numbers only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        results = run(args, Path(tmp))
    if not args.no_report:
        write_report(args, results)


if __name__ == "__main__":
    main()
