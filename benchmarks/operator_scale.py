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
    store = "bench-mc"
    k8s.create_store(store_manifest(store, namespaces))
    k8s.wait_store_ready(store, timeout=120)
    caches = workload(namespaces, args.caches, args.revisions)
    publishers = ThreadPoolExecutor(args.publishers)
    published: dict[tuple[str, str], float] = {}
    sampled: set[tuple[str, str]] = set()
    sample_lock = threading.Lock()

    def play_downloader(namespace: str, download: str, job_name: str) -> None:
        with sample_lock:
            own_identity = len(sampled) < args.sa_sample
            if own_identity:
                sampled.add((namespace, download))
        body = k8s.get_download(namespace, download)
        assert body is not None, f"ModelDownload {namespace}/{download} of Job {job_name} is missing"
        revision = body["spec"]["source"]["huggingface"]["revision"]
        reporter = downloader_reporter(k8s, cluster, namespace, download) if own_identity else \
            KubernetesStatusReporter(k8s.client, namespace, download, min_interval=0)
        publish(reporter, job_name, revision=commit_of(revision))
        published[(namespace, download)] = time.monotonic()

    observer = Observer(k8s.client, lambda ns, d, j: publishers.submit(play_downloader, ns, d, j))
    observer.start()
    time.sleep(2)  # both watches established before the first cache exists
    start_wall, start = now_utc(), time.monotonic()
    cpu_before = proc_usage(pids(operator))[1]
    kill_log: list[float] = []
    if args.kills:
        threading.Thread(target=killer, args=(operator, args.kills, kill_log, observer, args.caches),
                         daemon=True).start()
    with ThreadPoolExecutor(8) as creators:
        list(creators.map(lambda c: create_retrying(k8s, c[0], cache_manifest(c[1], store, c[2])), caches))
    created = time.monotonic() - start
    wait_for(lambda: len(observer.ready) >= len(caches), args.timeout, interval=0.5,
             describe=f"all {len(caches)} caches Ready",
             diagnostics=lambda: f"ready {len(observer.ready)}, jobs {len(observer.jobs_seen)}, "
                                 f"complete {len(observer.job_complete)}\n{operator.log_tail()}")
    all_ready = max(observer.ready.values())
    ready_wall = now_utc()
    wait_for(lambda: len(observer.job_complete) >= args.revisions, 120, interval=0.5,
             describe=f"all {args.revisions} Jobs Complete",
             diagnostics=lambda: f"complete {len(observer.job_complete)} of {len(observer.jobs_seen)} seen")
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

    return {
        "caches": len(caches),
        "revisions": args.revisions,
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
        "reports_through_own_serviceaccount": len(sampled),
        "checks": check_children(k8s, store, caches, observer.jobs_seen),
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


def check_children(k8s: Cluster, store: str, caches: list[tuple[str, str, str]],
                   jobs_seen: dict[tuple[str, str], set[str]]) -> dict[str, Any]:
    """Exactly one ModelDownload and one Job per revision (one Job UID over the whole run, from the watch),
    and per cache exactly one PV and one PVC and a downloadRef to its revision's ModelDownload."""
    downloads = k8s.downloads(store)
    by_revision: dict[str, list[str]] = {}
    for d in downloads:
        by_revision.setdefault(d["spec"]["source"]["huggingface"]["revision"], []).append(
            f"{d['metadata']['namespace']}/{d['metadata']['name']}")
    listed: list[Any] = k8s.batch.list_job_for_all_namespaces(
        label_selector=f"{DOWNLOADERS},{LABEL_STORE}={store}").items
    job_counts = Counter(f"{j.metadata.namespace}/{j.metadata.labels[LABEL_DOWNLOAD]}" for j in listed)
    pv_counts: Counter[str] = Counter()
    pvc_counts: Counter[str] = Counter()
    pvs: list[Any] = k8s.core.list_persistent_volume(label_selector=SERVING).items
    for pv in pvs:
        pv_counts[f"{pv.metadata.labels[LABEL_CACHE_NAMESPACE]}/{pv.metadata.labels[LABEL_CACHE]}"] += 1
    for namespace in sorted({c[0] for c in caches}):
        pvcs: list[Any] = k8s.core.list_namespaced_persistent_volume_claim(namespace, label_selector=SERVING).items
        for pvc in pvcs:
            pvc_counts[f"{namespace}/{pvc.metadata.labels[LABEL_CACHE]}"] += 1
    wrong_ref = []
    for namespace, name, revision in caches:
        ref = ((k8s.get_cache(namespace, name) or {}).get("status") or {}).get("downloadRef") or {}
        if [f"{ref.get('namespace')}/{ref.get('name')}"] != by_revision.get(revision):
            wrong_ref.append(f"{namespace}/{name}")
    revisions = sorted({c[2] for c in caches})
    result: dict[str, Any] = {
        "revisions": len(revisions),
        "jobs": len(listed),
        "jobs_seen": len(jobs_seen),
        "downloads": len(downloads),
        "revisions_without_exactly_one_download": {r: by_revision.get(r, []) for r in revisions
                                                   if len(by_revision.get(r, [])) != 1},
        "downloads_of_unknown_revisions": sorted(set(by_revision) - set(revisions)),
        "downloads_without_exactly_one_job": {d: job_counts[d] for names in by_revision.values() for d in names
                                              if job_counts[d] != 1},
        "job_uid_duplicates": {f"{k[0]}/{k[1]}": sorted(v) for k, v in jobs_seen.items() if len(v) != 1},
        "caches_without_exactly_one_pv_and_pvc": {
            f"{ns}/{name}": {"pv": pv_counts[f"{ns}/{name}"], "pvc": pvc_counts[f"{ns}/{name}"]}
            for ns, name, _ in caches if (pv_counts[f"{ns}/{name}"], pvc_counts[f"{ns}/{name}"]) != (1, 1)},
        "caches_not_on_their_revisions_download": wrong_ref,
    }
    result["ok"] = (result["jobs"] == result["jobs_seen"] == result["downloads"] == len(revisions)
                    and not any(v for k, v in result.items() if k not in ("revisions", "jobs", "jobs_seen",
                                                                           "downloads")))
    return result


def run_baseline(args: argparse.Namespace, cluster: LocalCluster, k8s: Cluster) -> dict[str, Any]:
    """The same caches' objects and reports, written directly by a script: the floor without an operator."""
    client = client_for(cluster.user_kubeconfig(BASELINE_USER, ("system:masters",)))
    base = Cluster(client)
    namespaces = make_namespaces(k8s, "base", args.namespaces)
    caches = workload(namespaces, args.caches, args.revisions)
    from modelcache_operator.operator.kube import Kube

    kube = Kube(client)
    store_name = "bench-base"
    store_body = base.create_store(store_manifest(store_name, namespaces))
    store = api.ModelStoreSpec.model_validate(store_body["spec"])
    for manifest in storage.store_writer_claim(store_body, store, OPERATOR_NAMESPACE):
        kube.apply(manifest)
    # The first cache of each revision is the one whose request starts its download, as with the operator.
    requesters = {revision: (namespace, name) for namespace, name, revision in reversed(caches)}
    start_wall, start = now_utc(), time.monotonic()

    def one(item: tuple[str, str, str]) -> tuple[str, str | None]:
        namespace, name, revision = item
        body = base.create_cache(namespace, cache_manifest(name, store_name, revision))
        spec = api.ModelCacheSpec.model_validate(body["spec"])
        place = layout.placement(spec, store, namespace)
        labels = naming.child_labels("serving", cache=(namespace, name), store=store_name)
        pv, pvc = naming.pv_name(namespace, name), naming.pvc_name(name)
        kube.apply(storage.persistent_volume(pv, store, place.serving_root, read_only=True, claim=(namespace, pvc),
                                             labels=labels, operator_namespace=OPERATOR_NAMESPACE))
        kube.apply(storage.persistent_volume_claim(pvc, namespace, store, read_only=True, volume_name=pv,
                                                   labels=labels, owners=[naming.owner_reference(body)]))
        download = naming.download_name(store_name, MODEL, layout.download_key(spec, store_name, namespace,
                                                                                 place.private, None))
        if requesters[revision] != (namespace, name):
            return download, None
        download_spec = api.ModelDownloadSpec(
            store=store_name, source=spec.source, folder=place.download_folder,
            claimName=naming.store_claim_name(store_name), download=spec.download, requestedBy=f"{namespace}/{name}")
        download_body = kube.apply({
            "apiVersion": api.API_VERSION, "kind": api.DOWNLOAD_KIND,
            "metadata": {"name": download, "namespace": OPERATOR_NAMESPACE,
                         "labels": naming.child_labels("download", store=store_name),
                         "ownerReferences": [naming.owner_reference(store_body)]},
            "spec": download_spec.model_dump(mode="json", exclude_none=True)})
        for manifest in [*jobs.downloader_rbac(download_body),
                         jobs.download_job(download_body, download_spec, store, "bench:baseline")]:
            kube.apply(manifest)
        job_name = naming.download_job_name(download)
        publish(KubernetesStatusReporter(client, OPERATOR_NAMESPACE, download, min_interval=0), job_name,
                revision=commit_of(revision))
        return download, job_name

    with ThreadPoolExecutor(8) as pool:
        results = dict(zip([(c[0], c[1]) for c in caches], pool.map(one, caches), strict=True))
    job_names = {download: job for download, job in results.values() if job is not None}

    def complete() -> bool:
        listed: list[Any] = k8s.batch.list_namespaced_job(OPERATOR_NAMESPACE, label_selector=DOWNLOADERS).items
        done = sum(any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
                   for job in listed if job.metadata.labels.get(LABEL_STORE) == store_name)
        return done >= len(job_names)
    wait_for(complete, args.timeout, interval=0.5, describe="baseline Jobs complete")

    def download_ready(download: str) -> None:
        kube.patch_status(api.DOWNLOAD_KIND, OPERATOR_NAMESPACE, download,
                          {"phase": "Ready", "jobName": job_names[download]})

    def cache_ready(item: tuple[tuple[str, str], tuple[str, str | None]]) -> None:
        (namespace, name), (download, _) = item
        requester = "/".join(requesters[next(c[2] for c in caches if c[:2] == (namespace, name))])
        kube.patch_status(api.KIND, namespace, name, {"phase": "Ready", "downloadRef": {
            "namespace": OPERATOR_NAMESPACE, "name": download, "shared": True, "requestedBy": requester}})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(download_ready, job_names))
        list(pool.map(cache_ready, results.items()))
    elapsed = time.monotonic() - start
    time.sleep(2)
    requests = audit_events(cluster.audit_log_path, BASELINE_USER, start_wall, now_utc())
    return {"seconds": elapsed, "jobs": len(job_names), "requests": len(requests),
            "requests_per_cache": len(requests) / len(caches), "requests_by_verb": breakdown(requests)}


def machine() -> str:
    memory = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout.splitlines()
    return (f"{os.cpu_count()} cores, {memory[1].split()[1] if len(memory) > 1 else '?'} RAM, "
            f"kernel {platform.release()}, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caches", type=int, default=500)
    parser.add_argument("--revisions", type=int, default=50,
                        help="distinct revisions the caches ask for: the number of ModelDownloads and Jobs")
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--resync", type=float, default=10.0, help="the operator's resync period, seconds")
    parser.add_argument("--publishers", type=int, default=8, help="threads playing the downloaders")
    parser.add_argument("--sa-sample", type=int, default=20,
                        help="downloads whose reports go through their own ServiceAccount")
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL+restart the operator this many times")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not 1 <= args.revisions <= args.caches:
        parser.error("--revisions must be between 1 and --caches")
    if args.namespaces < 1:
        parser.error("--namespaces must be at least 1")

    workdir = Path(tempfile.mkdtemp(prefix="mc-scale-"))
    cluster = LocalCluster(ensure_binaries(), workdir / "cluster", audit=True)
    cluster.up()
    operator: OperatorProcess | None = None
    failed = False
    try:
        admin = client_for(cluster.state.kubeconfig)
        k8s = Cluster(admin)
        cluster.install_crds(CRD_DIR)
        k8s.ensure_namespace(OPERATOR_NAMESPACE)
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
        if not results["operator"]["checks"]["ok"]:
            print("FAILED: Jobs, ModelDownloads or claims lost or duplicated; see \"checks\" above",
                  file=sys.stderr)
            failed = True
    finally:
        if operator is not None:
            operator.stop()
        cluster.down()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
