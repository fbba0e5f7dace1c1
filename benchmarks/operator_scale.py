"""Operator scale: N ModelCaches over R distinct revisions on the real local control plane, timed, counted
and measured.

    flock /tmp/modelcache-bench.lock .venv/bin/python benchmarks/operator_scale.py --caches 500 --revisions 50 \
        --namespaces 10

Its own LocalCluster (etcd, apiserver with an audit log, KCM, scheduler, kwok). The operator runs as a real
process under a client certificate of its own (CN=modelcache-operator, O=system:masters), so the audit log
counts its requests apart from everyone else's. One nfs ModelStore allows the benchmark's namespaces; cache i
lives in namespace i mod --namespaces and asks for revision r<(i div --namespaces) mod R>, so every revision
is wanted from several namespaces. Caches with the same revision share one ModelDownload and one Job: R Jobs
in all. kwok completes the download Jobs; the benchmark plays the downloader of each Job as soon as the Job
exists, with the downloader's own KubernetesStatusReporter (the first --sa-sample downloads through their
per-download ServiceAccount, the rest through the admin client).

Baseline, same run, after the operator is stopped: a script under its own certificate creates the same N
caches on a store of its own and writes exactly the objects the operator writes, built by the same builders:
the store's writable PV and PVC; per cache its PV and PVC; per distinct revision the ModelDownload, its
ServiceAccount, Role, RoleBinding and Job. It sends the same downloader reports, waits for kwok to complete
the Jobs and writes the Ready status of each ModelDownload and each cache once. That is the floor: the
apiserver, controllers and kwok doing the same work with no operator logic.

Checks, printed under "checks" and failing the run (exit status 1) when broken: exactly R Jobs and R
ModelDownloads, one per revision, each Job created once (one UID over the whole run); every cache with
exactly one PV and one PVC, pointing at its revision's ModelDownload.

--kills K SIGKILLs and restarts the operator K times at random moments while the caches converge; the same
checks then show that nothing was lost or duplicated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.downloader_role import downloader_reporter, publish
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import OperatorProcess, delete_webhook_configurations

from modelcache_devcluster.binaries import ensure_binaries
from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.names import (
    LABEL_CACHE,
    LABEL_CACHE_NAMESPACE,
    LABEL_DOWNLOAD,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_STORE,
    MANAGED_BY,
)
from modelcache_operator.builders import jobs, layout, naming, storage
from modelcache_operator.downloader.report import KubernetesStatusReporter

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "crds"
OPERATOR_USER = "modelcache-operator"
BASELINE_USER = "baseline-script"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


MODEL = "Qwen/Qwen3-0.6B"
DOWNLOADERS = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ROLE}=downloader"
SERVING = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ROLE}=serving"


def store_manifest(name: str, namespaces: list[str]) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.STORE_KIND, "metadata": {"name": name},
            "spec": {"nfs": {"server": "10.0.0.2", "path": f"/exports/{name}"}, "capacity": "10Gi",
                     "namespaceSelector": {"matchExpressions": [
                         {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]}}}


def cache_manifest(name: str, store: str, revision: str) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
            "spec": {"source": {"huggingface": {"repo": MODEL, "revision": revision}}, "store": store}}


def workload(namespaces: list[str], caches: int, revisions: int) -> list[tuple[str, str, str]]:
    """(namespace, cache, revision): round-robin over the namespaces, each revision in several of them."""
    return [(namespaces[i % len(namespaces)], f"cache-{i:04d}", f"r{(i // len(namespaces)) % revisions}")
            for i in range(caches)]


def commit_of(revision: str) -> str:
    """The commit the played downloader resolves a revision to: distinct per revision, as on a hub."""
    return hashlib.sha1(revision.encode(), usedforsecurity=False).hexdigest()


def client_for(kubeconfig: str | Path) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig),  # type: ignore[no-untyped-call]
                                       client_configuration=config)
    config.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(config)


def now_utc() -> datetime:
    return datetime.now(UTC)


# ----- observing the cluster -----

class Observer:
    """Watches download Jobs and ModelCaches (as admin): when each download's Job appeared and completed, every
    UID it had, and when each cache got Ready."""

    def __init__(self, client: kubernetes.client.ApiClient, on_job: Any) -> None:
        self.client = client
        self.on_job = on_job
        self.jobs_seen: dict[tuple[str, str], set[str]] = {}  # (namespace, download) -> Job UIDs
        self.job_complete: dict[tuple[str, str], float] = {}
        self.ready: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        for target in (self._watch_jobs, self._watch_caches):
            threading.Thread(target=self._forever, args=(target,), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _forever(self, target: Any) -> None:
        while not self._stop.is_set():
            try:
                target()
            except Exception:
                time.sleep(0.5)

    def _watch_jobs(self) -> None:
        batch = kubernetes.client.BatchV1Api(self.client)
        for event in kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
                batch.list_job_for_all_namespaces, label_selector=DOWNLOADERS, timeout_seconds=60):
            job = event["object"]
            key = (job.metadata.namespace, job.metadata.labels[LABEL_DOWNLOAD])
            with self._lock:
                first = key not in self.jobs_seen
                self.jobs_seen.setdefault(key, set()).add(job.metadata.uid)
                done = any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
                if done and key not in self.job_complete:
                    self.job_complete[key] = time.monotonic()
            if first:
                self.on_job(key[0], key[1], job.metadata.name)
            if self._stop.is_set():
                return

    def _watch_caches(self) -> None:
        custom = kubernetes.client.CustomObjectsApi(self.client)
        for event in kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
                custom.list_cluster_custom_object, api.GROUP, api.VERSION, api.PLURAL, timeout_seconds=60):
            obj = event["object"]
            key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
            if (obj.get("status") or {}).get("phase") == "Ready":
                with self._lock:
                    self.ready.setdefault(key, time.monotonic())
            if self._stop.is_set():
                return


# ----- process and apiserver measurements -----

def proc_usage(pids: list[int]) -> tuple[int, float]:
    """(sum of peak RSS bytes from VmHWM, CPU seconds user+system) over the processes."""
    rss, cpu = 0, 0.0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        rss += 1024 * next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return rss, cpu


def pids(operator: OperatorProcess) -> list[int]:
    """The operator and its admission webhook process: both count toward its footprint."""
    assert operator.process is not None, "the operator is not running"
    return [operator.process.pid, *operator.child_pids()]


def audit_events(path: Path, user: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    found = []
    with path.open() as f:
        for line in f:
            if f'"username":"{user}"' not in line:
                continue
            event = json.loads(line)
            stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if since <= stamp <= until:
                found.append(event)
    return found


def breakdown(events: list[dict[str, Any]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for event in events:
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        counts[f"{event['verb']} {resource}"] += 1
    return dict(counts.most_common())


def histogram_quantiles(metrics: str, name: str, quantiles: tuple[float, ...]) -> dict[float, float]:
    """Prometheus histogram_quantile: linear interpolation inside the bucket that holds the rank."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1]
    result = {}
    for q in quantiles:
        rank, lower, below = q * total, 0.0, 0.0
        for upper, count in buckets:
            if count >= rank:
                if upper == float("inf"):
                    result[q] = lower
                else:
                    result[q] = lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
                break
            lower, below = upper, count
    return result


def metric_value(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


# ----- the runs -----

def make_namespaces(k8s: Cluster, prefix: str, count: int) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(count)]
    for name in names:
        k8s.core.create_namespace({"metadata": {"name": name}})  # type: ignore[arg-type]
    for name in names:
        wait_for(lambda n=name: k8s.core.list_namespaced_service_account(  # type: ignore[misc]
            n, field_selector="metadata.name=default").items, 60, describe=f"default ServiceAccount in {name}")
    return names


def run_operator_phase(args: argparse.Namespace, cluster: LocalCluster, k8s: Cluster,
                       operator: OperatorProcess) -> dict[str, Any]:
    namespaces = make_namespaces(k8s, "mc", args.namespaces)
    caches = [(namespaces[i % len(namespaces)], f"cache-{i:04d}", i) for i in range(args.caches)]
    sample = {(ns, name) for ns, name, _ in caches[: args.sa_sample]}
    publishers = ThreadPoolExecutor(args.publishers)
    published: dict[tuple[str, str], float] = {}

    def play_downloader(namespace: str, cache: str, job_name: str) -> None:
        if (namespace, cache) in sample:
            client = serviceaccount_client(k8s, cluster, namespace, naming.downloader_identity_name(cache))
        else:
            client = k8s.client
        publish(KubernetesStatusReporter(client, namespace, cache, min_interval=0), job_name)
        published[(namespace, cache)] = time.monotonic()

    observer = Observer(k8s.client, lambda ns, c, j: publishers.submit(play_downloader, ns, c, j))
    observer.start()
    time.sleep(2)  # both watches established before the first cache exists
    start_wall, start = now_utc(), time.monotonic()
    cpu_before = proc_usage(pids(operator))[1]
    kill_log: list[float] = []
    if args.kills:
        threading.Thread(target=killer, args=(operator, args.kills, kill_log, observer, args.caches),
                         daemon=True).start()
    with ThreadPoolExecutor(8) as creators:
        list(creators.map(lambda c: create_retrying(k8s, c[0], cache_manifest(c[1], c[2], "mc")), caches))
    created = time.monotonic() - start
    wait_for(lambda: len(observer.ready) >= len(caches), args.timeout, interval=0.5,
             describe=f"all {len(caches)} caches Ready",
             diagnostics=lambda: f"ready {len(observer.ready)}, jobs {len(observer.jobs_seen)}, "
                                 f"complete {len(observer.job_complete)}\n{operator.log_tail()}")
    all_ready = max(observer.ready.values())
    ready_wall = now_utc()
    wait_for(lambda: len(observer.job_complete) >= len(caches), 120, interval=0.5,
             describe="all Jobs Complete")
    busy_rss, busy_cpu = proc_usage(pids(operator))
    metrics = operator.metrics()
    busy_requests = audit_events(cluster.audit_log_path, OPERATOR_USER, start_wall, ready_wall)

    # Idle: let stragglers settle for one period, then count the operator's requests over three.
    time.sleep(args.resync)
    idle_start_wall, idle_cpu_before = now_utc(), proc_usage(pids(operator))[1]
    time.sleep(3 * args.resync)
    idle_end_wall = now_utc()
    idle_rss, idle_cpu_after = proc_usage(pids(operator))
    time.sleep(2)  # the audit log backend writes each record as the request completes; give it a moment
    idle_requests = audit_events(cluster.audit_log_path, OPERATOR_USER, idle_start_wall, idle_end_wall)
    observer.stop()
    publishers.shutdown(wait=True)

    duplicates = {key: uids for key, uids in observer.jobs_seen.items() if len(uids) != 1}
    children = count_children(k8s, namespaces)
    return {
        "caches": len(caches),
        "create_seconds": created,
        "apply_to_all_ready_seconds": all_ready - start,
        "last_job_complete_to_all_ready_seconds": all_ready - max(observer.job_complete.values()),
        "last_publish_to_all_ready_seconds": all_ready - max(published.values()),
        "peak_rss_mib": max(busy_rss, idle_rss) / 2**20,
        "cpu_seconds_busy": busy_cpu - cpu_before,
        "cpu_seconds_idle_3_periods": idle_cpu_after - idle_cpu_before,
        "operator_requests_busy": len(busy_requests),
        "operator_requests_per_cache_busy": len(busy_requests) / len(caches),
        "operator_requests_busy_by_verb": breakdown(busy_requests),
        "operator_requests_idle_3_periods": len(idle_requests),
        "operator_requests_idle_by_verb": breakdown(idle_requests),
        "idle_requests_per_cache_per_period": len(idle_requests) / len(caches) / 3,
        "reconcile_quantiles_seconds": {f"p{int(q * 100)}": v for q, v in histogram_quantiles(
            metrics, "modelcache_reconcile_duration_seconds", (0.5, 0.99)).items()},
        "reconciles": metric_value(metrics, "modelcache_reconcile_total"),
        "api_writes_metric": metric_value(metrics, "modelcache_api_writes_total"),
        "kills": kill_log,
        "job_uid_duplicates": {f"{k[0]}/{k[1]}": sorted(v) for k, v in duplicates.items()},
        "children": children,
    }


def create_retrying(k8s: Cluster, namespace: str, manifest: dict[str, Any], timeout: float = 120) -> None:
    """Creates a cache, retrying while the operator is down: the ModelCache webhook's failurePolicy is Fail,
    so the apiserver refuses writes until the killed operator is back, as a client (or Argo CD) would see."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            k8s.create_cache(namespace, manifest)
            return
        except ApiException as error:
            if error.status != 500 or "failed calling webhook" not in str(error.body) or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def killer(operator: OperatorProcess, kills: int, log: list[float], observer: Observer, total: int) -> None:
    """SIGKILL and restart the operator at random moments while caches are still converging."""
    rng = random.Random(8)
    start = time.monotonic()
    for _ in range(kills):
        time.sleep(rng.uniform(2, 10))
        if len(observer.ready) >= total:
            return
        operator.kill()
        log.append(round(time.monotonic() - start, 1))
        time.sleep(rng.uniform(0, 2))
        operator.start()


def count_children(k8s: Cluster, namespaces: list[str]) -> dict[str, Any]:
    selector = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"
    per_cache: dict[str, Counter[str]] = {}
    for ns in namespaces:
        listed: tuple[tuple[str, list[Any]], ...] = (
            ("job", k8s.batch.list_namespaced_job(ns, label_selector=selector).items),
                            ("pvc", k8s.core.list_namespaced_persistent_volume_claim(
                                ns, label_selector=selector).items))
        for kind, items in listed:
            for item in items:
                per_cache.setdefault(f"{ns}/{item.metadata.labels[naming.LABEL_CACHE]}", Counter())[kind] += 1
    pvs: list[Any] = k8s.core.list_persistent_volume(label_selector=selector).items
    for pv in pvs:
        labels = pv.metadata.labels
        key = f"{labels[naming.LABEL_CACHE_NAMESPACE]}/{labels[naming.LABEL_CACHE]}"
        if key in per_cache:
            per_cache[key]["pv"] += 1
    wrong = {key: dict(c) for key, c in per_cache.items() if dict(c) != {"job": 1, "pvc": 1, "pv": 1}}
    return {"caches_with_children": len(per_cache), "not_exactly_one_each": wrong}


def run_baseline(args: argparse.Namespace, cluster: LocalCluster, k8s: Cluster) -> dict[str, Any]:
    """The same caches' objects and reports, written directly by a script: the floor without an operator."""
    client = client_for(cluster.user_kubeconfig(BASELINE_USER, ("system:masters",)))
    base = Cluster(client)
    namespaces = make_namespaces(k8s, "base", args.namespaces)
    caches = [(namespaces[i % len(namespaces)], f"cache-{i:04d}", i) for i in range(args.caches)]
    from modelcache_operator.operator.kube import Kube

    kube = Kube(client)
    start_wall, start = now_utc(), time.monotonic()

    def one(item: tuple[str, str, int]) -> str:
        namespace, name, index = item
        body = base.create_cache(namespace, cache_manifest(name, index, "base"))
        spec = api.ModelCacheSpec.model_validate(body["spec"])
        job_name = naming.download_job_name(name, naming.source_fingerprint(spec, None))
        children = [storage.persistent_volume(body, spec), storage.persistent_volume_claim(body, spec),
                    *jobs.downloader_rbac(body), jobs.download_job(body, spec, job_name, "bench:baseline")]
        for manifest in children:
            if manifest is not None:
                kube.apply(manifest)
        publish(KubernetesStatusReporter(client, namespace, name, min_interval=0), job_name)
        return job_name

    with ThreadPoolExecutor(8) as pool:
        job_names = dict(zip([(c[0], c[1]) for c in caches], pool.map(one, caches), strict=True))

    def complete() -> bool:
        done = 0
        for ns in namespaces:
            listed: list[Any] = k8s.batch.list_namespaced_job(ns).items
            for job in listed:
                done += any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
        return done >= len(caches)
    wait_for(complete, args.timeout, interval=0.5, describe="baseline Jobs complete")

    def ready(item: tuple[str, str]) -> None:
        kube.patch_status(item[0], item[1], {"phase": "Ready", "jobName": job_names[item]})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(ready, job_names))
    elapsed = time.monotonic() - start
    time.sleep(2)
    requests = audit_events(cluster.audit_log_path, BASELINE_USER, start_wall, now_utc())
    return {"seconds": elapsed, "requests": len(requests), "requests_per_cache": len(requests) / len(caches),
            "requests_by_verb": breakdown(requests)}


def machine() -> str:
    memory = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout.splitlines()
    return (f"{os.cpu_count()} cores, {memory[1].split()[1] if len(memory) > 1 else '?'} RAM, "
            f"kernel {platform.release()}, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caches", type=int, default=500)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--resync", type=float, default=10.0, help="the operator's resync period, seconds")
    parser.add_argument("--publishers", type=int, default=8, help="threads playing the downloaders")
    parser.add_argument("--sa-sample", type=int, default=20,
                        help="caches whose reports go through their own ServiceAccount")
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL+restart the operator this many times")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mc-scale-"))
    cluster = LocalCluster(ensure_binaries(), workdir / "cluster", audit=True)
    cluster.up()
    operator: OperatorProcess | None = None
    try:
        admin = client_for(cluster.state.kubeconfig)
        k8s = Cluster(admin)
        cluster.install_crds(CRD_DIR)
        kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ("system:masters",))
        operator = OperatorProcess(str(kubeconfig), workdir / "operator", resync_seconds=args.resync)
        operator.start()
        admission = kubernetes.client.AdmissionregistrationV1Api(admin)
        wait_for(lambda: admission.list_validating_webhook_configuration().items, 60,
                 describe="the operator's webhook configurations")
        results: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"json": str(args.json)}}
        results["operator"] = run_operator_phase(args, cluster, k8s, operator)
        results["operator"]["tracebacks_in_log"] = operator.log_text().count("Traceback")
        operator.stop()
        delete_webhook_configurations(k8s.client)
        if not args.no_baseline:
            results["baseline"] = run_baseline(args, cluster, k8s)
            results["ratio_operator_vs_baseline_seconds"] = (
                results["operator"]["apply_to_all_ready_seconds"] / results["baseline"]["seconds"])
        text = json.dumps(results, indent=2, default=str)
        print(text)
        if args.json:
            args.json.write_text(text)
    finally:
        if operator is not None:
            operator.stop()
        cluster.down()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
