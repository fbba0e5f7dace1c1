"""Resilience on the real control plane: operator SIGKILLs, apiserver and etcd restarts, hub failures with
the real downloader, shared downloads across namespaces, caches and stores that slipped past admission, and
fuzzed specs. Every test leaves the shared cluster and operator healthy for the tests after it.

Children, v1alpha2: per cache a read-only PV and PVC; per distinct download (store, source, filter, retry) one
ModelDownload with one Job (and its ServiceAccount, Role, RoleBinding), however many caches share it."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from modelcache_devcluster.kwok import FAILING_NODE, FAILING_NODE_TAINT
from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.names import (
    ANNOTATION_RETRY,
    LABEL_CACHE,
    LABEL_CACHE_NAMESPACE,
    LABEL_DOWNLOAD,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_STORE,
    MANAGED_BY,
)
from modelcache_operator.downloader.errors import ExitCode
from modelcache_operator.downloader.lock import LOCK_NAME
from modelcache_operator.downloader.manifest import verify_manifest
from modelcache_operator.downloader.report import KubernetesStatusReporter
from tests.hubs.huggingface import HuggingFaceHub
from tests.support.downloader_role import REVISION_A, downloader_reporter, publish
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import WEBHOOK_CONFIG_NAME, OperatorProcess
from tests.support.serviceaccount import serviceaccount_kubeconfig

pytestmark = pytest.mark.integration

MANAGED = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
DOWNLOADERS = f"{MANAGED},{LABEL_ROLE}=downloader"
SERVING = f"{MANAGED},{LABEL_ROLE}=serving"
ON_FAILING_NODE = {"nodeSelector": {"kubernetes.io/hostname": FAILING_NODE},
                   "tolerations": [{"key": FAILING_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}
MODEL = "Qwen/Qwen3-0.6B"
# The control plane shares two cores with other test runs: waits are sized for a loaded machine.
CONVERGE_SECONDS = 240


# ----- stores and caches -----

def allowing(*namespaces: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                  "values": sorted(namespaces)}]}


def nfs_store(name: str, namespaces: tuple[str, ...], path: str | None = None) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.STORE_KIND, "metadata": {"name": name},
            "spec": {"nfs": {"server": "10.0.0.2", "path": path or f"/exports/{uuid.uuid4().hex}"},
                     "capacity": "10Gi", "namespaceSelector": allowing(*namespaces)}}


StoreFactory = Callable[..., str]


def admits_without_webhook(k8s: Cluster, namespace: str, path: str) -> bool:
    """A dry-run store create: refused with 500 while the apiserver still calls the stopped webhook (its view
    of a deleted webhook configuration lags the delete)."""
    try:
        k8s.custom.create_cluster_custom_object(api.GROUP, api.VERSION, api.STORE_PLURAL,
                                                nfs_store("dry-run-probe", (namespace,), path), dry_run="All")
    except ApiException as error:
        if error.status == 500 and "failed calling webhook" in str(error.body):
            return False
        raise
    return True


@pytest.fixture
def make_store(k8s: Cluster, operator: OperatorProcess) -> Iterator[StoreFactory]:
    """Creates nfs ModelStores allowing the given namespaces (wait=False: no wait for Ready); all are deleted
    afterwards."""
    created: list[str] = []

    def make(*namespaces: str, path: str | None = None, wait: bool = True) -> str:
        name = f"st-{uuid.uuid4().hex[:8]}"
        k8s.create_store(nfs_store(name, namespaces, path))
        created.append(name)
        if wait:
            k8s.wait_store_ready(name, timeout=60)
        return name

    yield make
    for name in created:
        k8s.delete_store(name)


@pytest.fixture
def store(make_store: StoreFactory, namespace: str) -> str:
    """A store of this test's own, allowing only its namespace."""
    return make_store(namespace)


def cache_manifest(name: str, store: str, revision: str = "main", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"source": {"huggingface": {"repo": MODEL, "revision": revision}}, "store": store}
    body.update(spec)
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": body}


def commit_of(revision: str) -> str:
    """The commit the played downloader resolves a revision to: distinct per revision, as on a hub."""
    return hashlib.sha1(revision.encode(), usedforsecurity=False).hexdigest()


def other_namespace(k8s: Cluster) -> str:
    name = f"t-other-{uuid.uuid4().hex[:6]}"
    k8s.core.create_namespace({"metadata": {"name": name}})
    wait_for(lambda: k8s.core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
             30, describe=f"default ServiceAccount in {name}")
    return name


def download_ref(k8s: Cluster, namespace: str, cache: str) -> dict[str, Any] | None:
    ref: dict[str, Any] | None = ((k8s.get_cache(namespace, cache) or {}).get("status") or {}).get("downloadRef")
    return ref


def download_name_of(k8s: Cluster, namespace: str, cache: str) -> str:
    def probe() -> str | None:
        return (download_ref(k8s, namespace, cache) or {}).get("name")
    return wait_for(probe, 60, describe=f"the downloadRef of {namespace}/{cache}",
                    diagnostics=lambda: f"cache: {k8s.get_cache(namespace, cache)}")


def job_of(k8s: Cluster, namespace: str, cache: str, not_named: str | None = None) -> Any:
    """The Job of the ModelDownload the cache currently wants (not `not_named`)."""
    def probe() -> Any:
        body = k8s.get_cache(namespace, cache)
        download = k8s.download_of(body) if body else None
        if download is None:
            return None
        return next((j for j in k8s.download_jobs(download["metadata"]["name"]) if j.metadata.name != not_named),
                    None)
    return wait_for(probe, 60, describe=f"a download Job of {namespace}/{cache}",
                    diagnostics=lambda: f"cache: {k8s.get_cache(namespace, cache)}")


def reason_of(k8s: Cluster, namespace: str, cache: str, phase: str, reason: str) -> dict[str, Any]:
    """Waits for the cache in `phase` with Ready's reason `reason`; returns that condition."""
    def probe() -> dict[str, Any] | None:
        body = k8s.get_cache(namespace, cache) or {}
        if (body.get("status") or {}).get("phase") != phase:
            return None
        ready = k8s.condition(body, "Ready")
        return ready if ready["reason"] == reason else None
    return wait_for(probe, 60, describe=f"{namespace}/{cache} {phase} with reason {reason}",
                    diagnostics=lambda: f"cache: {k8s.get_cache(namespace, cache)}")


def serving_claims(k8s: Cluster, namespace: str) -> tuple[dict[str, str], dict[str, str]]:
    """(PVs, PVCs) for the caches of a namespace: cache name -> UID."""
    pvs = k8s.core.list_persistent_volume(
        label_selector=f"{SERVING},{LABEL_CACHE_NAMESPACE}={namespace}").items
    pvcs = k8s.core.list_namespaced_persistent_volume_claim(namespace, label_selector=SERVING).items
    return ({pv.metadata.labels[LABEL_CACHE]: str(pv.metadata.uid) for pv in pvs},
            {pvc.metadata.labels[LABEL_CACHE]: str(pvc.metadata.uid) for pvc in pvcs})


def store_jobs(k8s: Cluster, store: str) -> list[Any]:
    return list(k8s.batch.list_job_for_all_namespaces(label_selector=f"{DOWNLOADERS},{LABEL_STORE}={store}").items)


def cache_events(k8s: Cluster, namespace: str, name: str) -> list[Any]:
    return [e for e in k8s.events(namespace) if e.involved_object.name == name]


# ----- many caches: a downloader stand-in, and counting what exists -----

class DownloaderPlayer(threading.Thread):
    """Publishes each ModelDownload of a store as its Job's downloader would, as soon as the Job exists, with
    the downloader's reporting code under the download's own ServiceAccount, until stopped.

    Every pass re-reads the cluster and publishes again for downloads whose report did not land (the reporter
    only logs errors, like the real one), so an apiserver outage delays reports but never loses them."""

    def __init__(self, k8s: Cluster, cluster: LocalCluster, store: str):
        super().__init__(daemon=True)
        self.k8s, self.cluster, self.store = k8s, cluster, store
        self.reporters: dict[tuple[str, str], KubernetesStatusReporter] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.3):
            try:
                self._pass()
            except Exception:  # the apiserver may be restarting: try again on the next pass
                continue

    def _pass(self) -> None:
        jobs = {(j.metadata.namespace, j.metadata.labels[LABEL_DOWNLOAD]): j.metadata.name
                for j in store_jobs(self.k8s, self.store)}
        for download in self.k8s.downloads(self.store):
            key = (download["metadata"]["namespace"], download["metadata"]["name"])
            report = (download.get("status") or {}).get("download") or {}
            job = jobs.get(key)
            if job is None or (report.get("state"), report.get("jobName")) == ("Published", job):
                continue
            if key not in self.reporters:
                self.reporters[key] = downloader_reporter(self.k8s, self.cluster, *key)
            revision = download["spec"]["source"]["huggingface"]["revision"]
            publish(self.reporters[key], job, revision=commit_of(revision))

    def __enter__(self) -> DownloaderPlayer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(timeout=10)


def create_caches(k8s: Cluster, namespace: str, store: str, count: int, revisions: int,
                  prefix: str = "c") -> dict[str, str]:
    """`count` caches over `revisions` distinct revisions of one model: cache name -> revision."""
    caches = {f"{prefix}-{i:03d}": f"r{i % revisions}" for i in range(count)}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda item: k8s.create_cache(namespace, cache_manifest(item[0], store, item[1])),
                      caches.items()))
    return caches


def ready_count(k8s: Cluster, namespace: str) -> int:
    items = k8s.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)["items"]
    return sum((c.get("status") or {}).get("phase") == "Ready" for c in items)


def wait_all_ready(k8s: Cluster, namespace: str, count: int, operator: OperatorProcess,
                   timeout: float = CONVERGE_SECONDS) -> None:
    def probe() -> bool:
        try:
            return ready_count(k8s, namespace) == count
        except Exception:  # an apiserver that is still coming back: poll again
            return False
    wait_for(probe, timeout, interval=0.5, describe=f"{count} caches Ready in {namespace}",
             diagnostics=lambda: f"ready: {ready_count(k8s, namespace)}\n{operator.log_tail(30)}")


Seen = dict[str, dict[str, set[str]]]  # kind -> owner name -> UIDs
DOWNLOAD_CHILDREN = ("job", "serviceaccount", "role", "rolebinding")  # one each per ModelDownload
KINDS = ("pv", "pvc", "download", *DOWNLOAD_CHILDREN)


def children(k8s: Cluster, namespace: str, store: str) -> Seen:
    """UIDs of the PV and PVC of each cache (by cache name), and of each ModelDownload of the store and its
    Job, ServiceAccount, Role and RoleBinding (by download name)."""
    pvs, pvcs = serving_claims(k8s, namespace)
    found: Seen = {"pv": {c: {u} for c, u in pvs.items()}, "pvc": {c: {u} for c, u in pvcs.items()},
                   **{kind: {} for kind in ("download", *DOWNLOAD_CHILDREN)}}
    for download in k8s.downloads(store):
        found["download"].setdefault(download["metadata"]["name"], set()).add(download["metadata"]["uid"])
    mine = set(found["download"])
    identities: dict[str, list[Any]] = {
        "serviceaccount": k8s.core.list_namespaced_service_account(OPERATOR_NAMESPACE,
                                                                   label_selector=DOWNLOADERS).items,
        "role": k8s.rbac.list_namespaced_role(OPERATOR_NAMESPACE, label_selector=DOWNLOADERS).items,
        "rolebinding": k8s.rbac.list_namespaced_role_binding(OPERATOR_NAMESPACE, label_selector=DOWNLOADERS).items,
    }
    for kind, listed in identities.items():
        for item in listed:
            if item.metadata.labels[LABEL_DOWNLOAD] in mine:
                found[kind].setdefault(item.metadata.labels[LABEL_DOWNLOAD], set()).add(item.metadata.uid)
    for job in store_jobs(k8s, store):
        found["job"].setdefault(job.metadata.labels[LABEL_DOWNLOAD], set()).add(job.metadata.uid)
    return found


def merge(into: Seen, snapshot: Seen) -> None:
    for kind, owners in snapshot.items():
        for owner, uids in owners.items():
            into.setdefault(kind, {}).setdefault(owner, set()).update(uids)


def assert_exactly_once(seen: Seen, final: Seen, k8s: Cluster, namespace: str, caches: dict[str, str]) -> None:
    """Over the whole run (UIDs from every snapshot), every cache had exactly one PV and PVC and every
    distinct revision exactly one ModelDownload, Job, ServiceAccount, Role and RoleBinding, which all caches
    of that revision share; and nothing was lost by the end (`final`)."""
    wrong = {f"{kind} {owner}": len(uids) for kind in KINDS for owner, uids in seen.get(kind, {}).items()
             if len(uids) != 1}
    assert wrong == {}, f"children created more than once: {wrong}"
    assert sorted(seen["pv"]) == sorted(seen["pvc"]) == sorted(caches)
    assert sorted(final["pv"]) == sorted(final["pvc"]) == sorted(caches), "a cache lost its PV or PVC"
    bodies = {name: k8s.get_cache(namespace, name) or {} for name in caches}
    refs = {name: (body.get("status") or {}).get("downloadRef") or {} for name, body in bodies.items()}
    by_revision: dict[str, set[str]] = {}
    for name, revision in caches.items():
        by_revision.setdefault(revision, set()).add(refs[name].get("name", ""))
        assert refs[name].get("namespace") == OPERATOR_NAMESPACE and refs[name].get("shared") is True, refs[name]
        assert bodies[name]["status"]["resolvedRevision"] == commit_of(revision), (name, bodies[name]["status"])
    assert all(len(names) == 1 for names in by_revision.values()), f"one revision, several downloads: {by_revision}"
    downloads = {next(iter(names)) for names in by_revision.values()}
    assert len(downloads) == len(by_revision), f"two revisions share a download: {by_revision}"
    assert sorted(seen["download"]) == sorted(final["download"]) == sorted(downloads)
    for kind in DOWNLOAD_CHILDREN:
        assert sorted(seen[kind]) == sorted(final[kind]) == sorted(downloads), kind


def test_operator_sigkilled_at_random_points_converges_without_duplicates(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster, store: str) -> None:
    rng = random.Random(20261121)
    seen: Seen = {}
    with DownloaderPlayer(k8s, local_cluster, store):
        caches = create_caches(k8s, namespace, store, 40, revisions=8)
        try:
            for _ in range(4):
                time.sleep(rng.uniform(0.3, 3.0))
                operator.kill()
                merge(seen, children(k8s, namespace, store))
                time.sleep(rng.uniform(0.0, 1.5))
                operator.start()
        finally:
            if operator.process is None or operator.process.poll() is not None:
                operator.start()  # never leave the shared operator dead
        wait_all_ready(k8s, namespace, len(caches), operator)
    time.sleep(operator.resync_seconds * 2)  # a late duplicate would show up now
    final = children(k8s, namespace, store)
    merge(seen, final)
    assert_exactly_once(seen, final, k8s, namespace, caches)


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_restart_during_reconciliation(component: str, k8s: Cluster, namespace: str,
                                                     operator: OperatorProcess, local_cluster: LocalCluster,
                                                     store: str) -> None:
    seen: Seen = {}
    with DownloaderPlayer(k8s, local_cluster, store):
        caches = create_caches(k8s, namespace, store, 30, revisions=6)
        time.sleep(1.5)  # some downloads have Jobs, some caches are still provisioning
        merge(seen, children(k8s, namespace, store))
        if component == "etcd":
            local_cluster.restart_etcd(downtime=2.0)
        else:
            local_cluster.restart_apiserver()
        wait_all_ready(k8s, namespace, len(caches), operator)
        # The watches reconnected by themselves: a cache created after the restart converges too, with a
        # revision nobody asked for yet (a new ModelDownload and Job) ...
        k8s.create_cache(namespace, cache_manifest("after-restart", store, "r-new"))
        caches["after-restart"] = "r-new"
        # ... and one sharing an existing download.
        k8s.create_cache(namespace, cache_manifest("after-restart-shared", store, "r0"))
        caches["after-restart-shared"] = "r0"
        wait_all_ready(k8s, namespace, len(caches), operator, timeout=120)
    time.sleep(operator.resync_seconds * 2)
    final = children(k8s, namespace, store)
    merge(seen, final)
    assert_exactly_once(seen, final, k8s, namespace, caches)
    assert operator.process is not None and operator.process.poll() is None, "the operator died"


# ----- the real downloader against a hub that misbehaves -----

HUB_REPO = "acme/tiny"
HUB_TOKEN = "hf_RightToken_" + uuid.uuid4().hex[:8]


@pytest.fixture
def hub() -> Iterator[HuggingFaceHub]:
    hub = HuggingFaceHub(token=HUB_TOKEN)
    hub.add_repo(HUB_REPO, {"config.json": json.dumps({"architectures": ["BertModel"]}).encode(),
                            "model.safetensors": os.urandom(256 * 1024)})
    hub.start()
    yield hub
    hub.stop()


def token_secret(k8s: Cluster, namespace: str, token: str) -> None:
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "hf-token"}, "stringData": {"HF_TOKEN": token}})


def hub_cache(name: str, store: str, hub: HuggingFaceHub, revision: str = "main", **spec: Any) -> dict[str, Any]:
    """A cache with its own token: its ModelDownload and Job live in its namespace, not shared."""
    source = {"huggingface": {"repo": HUB_REPO, "revision": revision, "endpoint": hub.url,
                              "tokenSecretRef": {"name": "hf-token", "key": "HF_TOKEN"}}}
    return cache_manifest(name, store, source=source, **spec)


def run_job_downloader(k8s: Cluster, cluster: LocalCluster, job: Any, workdir: Path,
                       **extra: str) -> subprocess.CompletedProcess[str]:
    """The Job's container command on the host, with the Job's env (secretKeyRef resolved as the kubelet
    would), authenticated as the Job's ServiceAccount; the volume's subPath is mapped to workdir/volume."""
    workdir.mkdir(parents=True, exist_ok=True)
    namespace = job.metadata.namespace
    pod = job.spec.template.spec
    kubeconfig = serviceaccount_kubeconfig(k8s, cluster, namespace, pod.service_account_name,
                                           workdir / "downloader.kubeconfig")
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "KUBECONFIG": str(kubeconfig),
           "HF_HUB_DISABLE_XET": "1", "MC_RETRY_BACKOFF_SECONDS": "0.2", "MC_LOCK_WAIT_SECONDS": "0"}
    for item in pod.containers[0].env:
        if item.value is not None:
            env[item.name] = item.value
        elif item.value_from.secret_key_ref:
            ref = item.value_from.secret_key_ref
            secret = k8s.core.read_namespaced_secret(ref.name, namespace)
            env[item.name] = base64.b64decode(secret.data[ref.key]).decode()
        else:
            env[item.name] = f"{job.metadata.name}-pod"
    env |= {"MC_ROOT": str(workdir / "volume"), "MC_TERMINATION_LOG": str(workdir / "termination-log"),
            "TMPDIR": str(workdir), "HF_HOME": str(workdir / "hf-home"), **extra}
    return subprocess.run([sys.executable, "-m", "modelcache_operator.downloader"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_hub_500s_then_recovery_ends_ready_with_bounded_backoff(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster,
        hub: HuggingFaceHub, tmp_path: Path, store: str) -> None:
    token_secret(k8s, namespace, HUB_TOKEN)
    k8s.create_cache(namespace, hub_cache("flaky", store, hub))
    job = job_of(k8s, namespace, "flaky")
    # Its own token: a private download in the cache's namespace.
    assert job.metadata.namespace == namespace
    ref = (k8s.get_cache(namespace, "flaky") or {})["status"]["downloadRef"]
    assert ref["namespace"] == namespace and ref["shared"] is False and ref["requestedBy"] == f"{namespace}/flaky"
    hub.faults.fail_first = 4
    result = run_job_downloader(k8s, local_cluster, job, tmp_path, MC_RETRIES="5")
    assert result.returncode == 0, result.stderr
    assert hub.faults.fail_first == 0
    retries = [line for line in result.stderr.splitlines() if "; retry " in line]
    # Four 500s, four retries (of at most 5), each waiting twice as long as the one before.
    assert len(retries) == 4, result.stderr
    assert [line.rsplit(" in ", 1)[1] for line in retries] == ["0.2s", "0.4s", "0.8s", "1.6s"]
    ready = k8s.wait_phase(namespace, "flaky", "Ready", timeout=90, diagnostics=operator.log_tail)
    assert ready["status"]["resolvedRevision"] == hub.repos[HUB_REPO].sha
    assert ready["status"]["fileCount"] == 2
    assert ready["status"]["revisionPath"] == f"all/{hub.repos[HUB_REPO].sha}"

    # kopf posts events asynchronously, so they may trail the status write.
    def published_events() -> list[Any] | None:
        found = cache_events(k8s, namespace, "flaky")
        return found if {"Published", "Ready"} <= {e.reason for e in found} else None
    events = wait_for(published_events, 30, describe="the Published and Ready events")
    assert not [e for e in events if e.type == "Warning"], "transient 500s must not surface as failures"
    assert [j.metadata.name for j in store_jobs(k8s, store)] == [job.metadata.name]


@pytest.mark.parametrize(("problem", "exit_code"), [("Unauthorized", ExitCode.UNAUTHORIZED),
                                                    ("NotFound", ExitCode.NOT_FOUND)])
def test_permanent_hub_error_fails_once_with_reason_and_fix_recovers(
        problem: str, exit_code: int, k8s: Cluster, namespace: str, operator: OperatorProcess,
        local_cluster: LocalCluster, hub: HuggingFaceHub, tmp_path: Path, store: str) -> None:
    """The real downloader meets a 401 or 404 and exits non-retryable; kwok's failing node makes the Job's pod
    exit 11 so the real Job controller's podFailurePolicy fails the Job at once. The cache is Failed with
    the downloader's reason; fixing the Secret (plus the retry annotation) or the revision makes a new
    ModelDownload, whose Job recovers it. The failed ModelDownload stays as it was."""
    token_secret(k8s, namespace, HUB_TOKEN if problem == "NotFound" else "hf_wrong_token")
    revision = "no-such-branch" if problem == "NotFound" else "main"
    k8s.create_cache(namespace, hub_cache("broken", store, hub, revision=revision, download=ON_FAILING_NODE))
    job = job_of(k8s, namespace, "broken")
    first_download = job.metadata.labels[LABEL_DOWNLOAD]
    result = run_job_downloader(k8s, local_cluster, job, tmp_path / "first")
    assert result.returncode == exit_code, result.stderr
    assert json.loads((tmp_path / "first" / "termination-log").read_text())["reason"] == problem
    assert len(hub.requests) <= 2, f"a permanent error must not be retried: {hub.requests}"

    def failed_with_reason() -> dict[str, Any] | None:
        cache = k8s.get_cache(namespace, "broken") or {}
        if (cache.get("status") or {}).get("phase") != "Failed":
            return None
        condition = k8s.condition(cache, "Ready")
        # kwok's termination message says NotFound too; wait for the downloader's own report.
        mine = condition["reason"] == problem and "kwok failing node" not in condition["message"]
        return condition if mine else None
    condition = wait_for(failed_with_reason, 60, describe=f"Failed with reason {problem}",
                         diagnostics=lambda: json.dumps(k8s.get_cache(namespace, "broken")))
    assert condition["message"].strip()
    download = k8s.get_download(namespace, first_download)
    assert download is not None and download["status"]["phase"] == "Failed"
    assert k8s.condition(download, "Downloaded")["reason"] == problem
    for shown in (k8s.get_cache(namespace, "broken"), download):
        assert "hf_wrong_token" not in json.dumps(shown)
    # No retry storm: the Job failed once, its one pod was not replaced, and nothing new starts.
    time.sleep(operator.resync_seconds * 3)
    jobs = store_jobs(k8s, store)
    assert [j.metadata.name for j in jobs] == [job.metadata.name]
    assert jobs[0].status.failed == 1
    assert [d["metadata"]["name"] for d in k8s.downloads(store)] == [first_download]
    pods = k8s.core.list_namespaced_pod(namespace, label_selector=f"job-name={job.metadata.name}").items
    assert len(pods) == 1
    warnings = [e for e in cache_events(k8s, namespace, "broken") if e.type == "Warning"]
    assert problem in {e.reason for e in warnings}
    assert sum(e.count or 1 for e in warnings) <= 6, [(e.reason, e.count) for e in warnings]

    if problem == "Unauthorized":
        k8s.core.patch_namespaced_secret("hf-token", namespace, {"stringData": {"HF_TOKEN": HUB_TOKEN}})
        fix: dict[str, Any] = {"metadata": {"annotations": {ANNOTATION_RETRY: "1"}}, "spec": {}}
    else:
        fix = {"spec": {"source": {"huggingface": {"revision": "main"}}}}
    # The new download takes its Job options from the cache as it is now.
    fix["spec"]["download"] = {"nodeSelector": None, "tolerations": None}
    k8s.patch_cache(namespace, "broken", fix)
    second = job_of(k8s, namespace, "broken", not_named=job.metadata.name)
    assert second.metadata.labels[LABEL_DOWNLOAD] != first_download
    assert second.spec.template.spec.node_selector is None
    result = run_job_downloader(k8s, local_cluster, second, tmp_path / "second")
    assert result.returncode == 0, result.stderr
    ready = k8s.wait_phase(namespace, "broken", "Ready", timeout=90, diagnostics=operator.log_tail)
    assert ready["status"]["resolvedRevision"] == hub.repos[HUB_REPO].sha
    assert ready["status"]["downloadRef"]["name"] == second.metadata.labels[LABEL_DOWNLOAD]
    # The failed download and its Job stay as they were; exactly one more of each.
    assert sorted(d["metadata"]["name"] for d in k8s.downloads(store)) == sorted(
        [first_download, second.metadata.labels[LABEL_DOWNLOAD]])
    assert (k8s.get_download(namespace, first_download) or {}).get("status", {}).get("phase") == "Failed"
    assert sorted(j.metadata.name for j in store_jobs(k8s, store)) == sorted([job.metadata.name,
                                                                              second.metadata.name])


# ----- one download, several namespaces -----

def test_same_source_in_two_namespaces_shares_one_download_and_outlives_its_requester(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster,
        make_store: StoreFactory) -> None:
    """Two namespaces, one store, one model: one ModelDownload and one Job, a PV and PVC per cache. Deleting
    the cache that requested the download removes only its own PV and PVC at once: the Job, the ModelDownload
    and the other namespace's cache stay as they are."""
    other = other_namespace(k8s)
    try:
        store = make_store(namespace, other)
        k8s.create_cache(namespace, cache_manifest("first", store))
        download = download_name_of(k8s, namespace, "first")
        k8s.create_cache(other, cache_manifest("second", store))
        assert download_name_of(k8s, other, "second") == download
        # Both name the cache whose request started the download (a cache reconciled before the watch brought
        # the ModelDownload learns it on its next pass).
        shared_ref = {"namespace": OPERATOR_NAMESPACE, "name": download, "shared": True,
                      "requestedBy": f"{namespace}/first"}
        for ns, name in ((namespace, "first"), (other, "second")):
            wait_for(lambda n=ns, c=name: download_ref(k8s, n, c) == shared_ref, 30,  # type: ignore[misc]
                     describe=f"{ns}/{name} sharing {download}",
                     diagnostics=lambda n=ns, c=name: f"downloadRef: {download_ref(k8s, n, c)}")  # type: ignore[misc]
        job = job_of(k8s, other, "second")
        publish(downloader_reporter(k8s, local_cluster, OPERATOR_NAMESPACE, download), job.metadata.name)
        for ns, name in ((namespace, "first"), (other, "second")):
            ready = k8s.wait_phase(ns, name, "Ready", timeout=90, diagnostics=operator.log_tail)
            assert ready["status"]["resolvedRevision"] == REVISION_A
        (first_pv, first_pvc), (second_pv, second_pvc) = (serving_claims(k8s, namespace),
                                                           serving_claims(k8s, other))
        assert first_pv.keys() == first_pvc.keys() == {"first"}
        assert second_pv.keys() == second_pvc.keys() == {"second"}
        assert [d["metadata"]["name"] for d in k8s.downloads(store)] == [download]
        download_uid = k8s.downloads(store)[0]["metadata"]["uid"]
        assert [j.metadata.uid for j in store_jobs(k8s, store)] == [job.metadata.uid]

        k8s.delete_cache(namespace, "first")
        wait_for(lambda: k8s.get_cache(namespace, "first") is None, 30, describe="first deleted",
                 diagnostics=operator.log_tail)
        # Deleted at once; the protection finalizers let them go within moments.
        wait_for(lambda: serving_claims(k8s, namespace) == ({}, {}), 30, describe="first's PV and PVC gone",
                 diagnostics=lambda: f"left: {serving_claims(k8s, namespace)}")
        time.sleep(operator.resync_seconds * 2)
        assert serving_claims(k8s, namespace) == ({}, {})
        assert serving_claims(k8s, other) == (second_pv, second_pvc)
        assert [d["metadata"]["uid"] for d in k8s.downloads(store)] == [download_uid]
        assert [j.metadata.uid for j in store_jobs(k8s, store)] == [job.metadata.uid]
        still = k8s.get_cache(other, "second") or {}
        assert still["status"]["phase"] == "Ready"
        assert still["status"]["downloadRef"]["name"] == download
    finally:
        k8s.core.delete_namespace(other)


# ----- caches and stores that slipped past admission -----

def test_caches_that_slipped_past_admission_get_nothing_the_stores_do_not_allow(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster,
        make_store: StoreFactory) -> None:
    """With the operator down and its validating webhook configuration gone, three caches are admitted: one
    allowed, one in a namespace its store does not select, and one on a store whose root is inside the
    first store's. The operator proceeds with the first only; the others stay Pending with the reason and
    get no PV, PVC, ModelDownload or Job until an admin allows the namespace (it then shares the existing
    download, no second Job) or deletes the older store (the nested store then works by itself)."""
    other = other_namespace(k8s)
    admission = kubernetes.client.AdmissionregistrationV1Api(k8s.client)
    try:
        root = f"/exports/{uuid.uuid4().hex}"
        store = make_store(namespace, path=root)
        time.sleep(1.1)  # creationTimestamp has one-second resolution: make the nested store strictly newer
        operator.kill()
        try:
            try:
                admission.delete_validating_webhook_configuration(WEBHOOK_CONFIG_NAME)
            except ApiException as error:
                assert error.status == 404, error.body
            wait_for(lambda: admits_without_webhook(k8s, namespace, root + "/sub"), 30,
                     describe="the apiserver no longer calling the removed validating webhook")
            nested = make_store(namespace, path=root + "/sub", wait=False)
            k8s.create_cache(namespace, cache_manifest("allowed", store))
            k8s.create_cache(other, cache_manifest("outsider", store))
            k8s.create_cache(namespace, cache_manifest("nested", nested))
        finally:
            operator.start()  # registers the webhook configuration again
        wait_for(lambda: admission.list_validating_webhook_configuration(
            field_selector=f"metadata.name={WEBHOOK_CONFIG_NAME}").items, 30, describe="the webhook back")

        job = job_of(k8s, namespace, "allowed")
        download = job.metadata.labels[LABEL_DOWNLOAD]
        outsider = reason_of(k8s, other, "outsider", "Pending", "StoreNotAllowed")
        assert store in outsider["message"] and other in outsider["message"]

        def nested_store_invalid() -> dict[str, Any] | None:
            body = k8s.get_store(nested) or {}
            conditions = (body.get("status") or {}).get("conditions") or []
            ready = next((c for c in conditions if c["type"] == "Ready"), None)
            invalid = (body.get("status") or {}).get("phase") == "Invalid"
            return ready if invalid and ready and ready["reason"] == "RootOverlap" else None
        overlap = wait_for(nested_store_invalid, 60, describe=f"ModelStore {nested} Invalid with RootOverlap",
                           diagnostics=lambda: f"store: {k8s.get_store(nested)}")
        assert store in overlap["message"]
        blocked = reason_of(k8s, namespace, "nested", "Pending", "RootOverlap")
        assert nested in blocked["message"] and store in blocked["message"]

        time.sleep(operator.resync_seconds * 2)
        assert serving_claims(k8s, other) == ({}, {})
        assert serving_claims(k8s, namespace)[1].keys() == {"allowed"}
        assert serving_claims(k8s, namespace)[0].keys() == {"allowed"}
        assert [d["metadata"]["name"] for d in k8s.downloads(store)] == [download]
        assert k8s.downloads(nested) == [] and store_jobs(k8s, nested) == []
        assert [j.metadata.name for j in store_jobs(k8s, store)] == [job.metadata.name]
        assert "StoreNotAllowed" in {e.reason for e in cache_events(k8s, other, "outsider") if e.type == "Warning"}
        assert "RootOverlap" in {e.reason for e in cache_events(k8s, namespace, "nested") if e.type == "Warning"}

        publish(downloader_reporter(k8s, local_cluster, OPERATOR_NAMESPACE, download), job.metadata.name)
        k8s.wait_phase(namespace, "allowed", "Ready", timeout=90, diagnostics=operator.log_tail)

        # The admin allows the other namespace: its cache shares the published download, no second Job.
        k8s.custom.patch_cluster_custom_object(api.GROUP, api.VERSION, api.STORE_PLURAL, store,
                                               {"spec": {"namespaceSelector": allowing(namespace, other)}})
        shared = k8s.wait_phase(other, "outsider", "Ready", timeout=90, diagnostics=operator.log_tail)
        assert shared["status"]["downloadRef"] == {"namespace": OPERATOR_NAMESPACE, "name": download,
                                                   "shared": True, "requestedBy": f"{namespace}/allowed"}
        assert serving_claims(k8s, other)[0].keys() == serving_claims(k8s, other)[1].keys() == {"outsider"}
        assert [j.metadata.name for j in store_jobs(k8s, store)] == [job.metadata.name]

        # The older store goes: the nested one is the only store on that export now, and works.
        k8s.delete_store(store)
        k8s.wait_store_ready(nested, timeout=90)
        nested_job = job_of(k8s, namespace, "nested")
        nested_download = nested_job.metadata.labels[LABEL_DOWNLOAD]
        publish(downloader_reporter(k8s, local_cluster, OPERATOR_NAMESPACE, nested_download),
                nested_job.metadata.name)
        k8s.wait_phase(namespace, "nested", "Ready", timeout=90, diagnostics=operator.log_tail)
        assert [j.metadata.name for j in store_jobs(k8s, nested)] == [nested_job.metadata.name]
    finally:
        if operator.process is None or operator.process.poll() is not None:
            operator.start()
        k8s.core.delete_namespace(other)


def test_two_downloaders_on_one_volume_never_both_write(hub: HuggingFaceHub, tmp_path: Path) -> None:
    """The volume lock: a second writer on the same root exits LockHeld (15) while the first finishes."""
    hub.faults.bytes_per_second = 32 * 1024  # the 256 KiB file takes ~8 s: the first writer holds the lock
    root = tmp_path / "volume"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MC_HUB": "huggingface", "MC_REPO": HUB_REPO,
           "MC_ENDPOINT": hub.url, "MC_HUB_TOKEN": HUB_TOKEN, "MC_ROOT": str(root), "MC_REPORT": "none",
           "MC_LOCK_WAIT_SECONDS": "0", "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "modelcache_operator.downloader"]
    first = subprocess.Popen(command, env={**env, "POD_NAME": "writer-a",
                                           "MC_TERMINATION_LOG": str(tmp_path / "a.term")},
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (root / LOCK_NAME).exists(), 30, describe="the first writer's lock")
        second = subprocess.run(command, env={**env, "POD_NAME": "writer-b",
                                              "MC_TERMINATION_LOG": str(tmp_path / "b.term")},
                                capture_output=True, text=True, timeout=60, check=False)
        assert first.poll() is None, "the first writer must still be downloading"
    finally:
        _, first_err = first.communicate(timeout=120)
    assert second.returncode == ExitCode.LOCK_HELD, second.stderr
    termination = json.loads((tmp_path / "b.term").read_text())
    assert termination["reason"] == "LockHeld" and "writer-a" in termination["message"]
    assert first.returncode == 0, first_err
    assert verify_manifest(root / hub.repos[HUB_REPO].sha).fileCount == 2
    assert not (root / LOCK_NAME).exists()


# ----- fuzzed specs against the CRD schema, the webhook and the reconcilers -----

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40)
SIMPLE = st.from_regex(r"[a-z0-9][a-z0-9./_-]{0,30}", fullmatch=True)
ANY_SCALAR = st.one_of(TEXT, st.integers(-10, 10**6), st.booleans(), st.none())


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, ANY_SCALAR)


def _hub_fields(repo_key: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {repo_key: st.one_of(st.from_regex(r"[A-Za-z0-9-]{1,12}/[A-Za-z0-9._-]{1,20}", fullmatch=True), TEXT)},
        optional={"revision": st.one_of(SIMPLE, TEXT), "allowPatterns": _maybe(st.lists(TEXT, max_size=3)),
                  "ignorePatterns": st.lists(SIMPLE, max_size=3),
                  "endpoint": st.one_of(st.just("https://hf-mirror.example.com"), TEXT),
                  "tokenSecretRef": _maybe(st.fixed_dictionaries({"name": SIMPLE}, optional={"key": TEXT}))})


SOURCES = st.one_of(
    st.fixed_dictionaries({"huggingface": _hub_fields("repo")}),
    st.fixed_dictionaries({"modelscope": _hub_fields("model")}),
    st.fixed_dictionaries({"huggingface": _hub_fields("repo"), "modelscope": _hub_fields("model")}),
    st.dictionaries(TEXT, ANY_SCALAR, max_size=2))
PATH = "@path@"  # replaced by a fresh directory per example, so valid stores do not all overlap
PATHS = st.one_of(st.just(PATH), st.just("/"), st.just(PATH + "/../x"), TEXT)
BACKENDS = st.one_of(
    st.fixed_dictionaries({"nfs": st.fixed_dictionaries(
        {"server": st.one_of(st.just("10.0.0.2"), SIMPLE, TEXT), "path": PATHS},
        optional={"mountOptions": st.lists(st.one_of(st.just("nfsvers=4.1"), TEXT), max_size=2)})}),
    st.fixed_dictionaries({"ossfs2": st.fixed_dictionaries(
        {"bucket": st.one_of(st.just("oss-models"), SIMPLE, TEXT), "path": PATHS,
         "url": st.one_of(st.just("http://oss-cn-hangzhou-internal.aliyuncs.com"), SIMPLE, TEXT)},
        optional={"authType": st.sampled_from(["rrsa", "secret", "bogus"]), "roleName": SIMPLE,
                  "secretRef": st.fixed_dictionaries({"name": SIMPLE}), "otherOpts": TEXT})}),
    st.fixed_dictionaries({"efs": st.fixed_dictionaries(
        {"fileSystemId": st.one_of(st.just("fs-0123abcd"), SIMPLE, TEXT)},
        optional={"accessPointId": st.one_of(st.just("fsap-0123abcd"), SIMPLE), "path": PATHS})}),
    st.fixed_dictionaries({"storageClass": st.fixed_dictionaries({"name": st.one_of(SIMPLE, TEXT)})}),
    st.fixed_dictionaries({"hostPath": st.fixed_dictionaries({"path": PATHS})}),
    st.dictionaries(TEXT, ANY_SCALAR, max_size=2))
DOWNLOAD = st.fixed_dictionaries({}, optional={
    "image": st.one_of(SIMPLE, TEXT), "maxWorkers": st.integers(-3, 10_000), "backoffLimit": st.integers(-3, 100),
    "activeDeadlineSeconds": st.integers(-3, 10**10),
    "nodeSelector": st.dictionaries(st.one_of(SIMPLE, TEXT), st.one_of(SIMPLE, TEXT), max_size=2),
    "tolerations": st.lists(st.fixed_dictionaries({}, optional={
        "key": SIMPLE, "operator": st.sampled_from(["Exists", "Equal", "Bogus"]), "value": TEXT,
        "effect": st.sampled_from(["NoSchedule", "NoExecute", "Sometimes"])}), max_size=2),
    "resources": st.fixed_dictionaries({}, optional={
        "limits": st.dictionaries(st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "x"]),
                                  st.one_of(st.sampled_from(["1", "2Gi", "500m"]), TEXT), max_size=3),
        "requests": st.dictionaries(st.sampled_from(["cpu", "memory"]),
                                    st.one_of(st.sampled_from(["1", "2Gi"]), TEXT), max_size=2)})})
PREWARM = st.fixed_dictionaries({}, optional={
    "mode": st.sampled_from(["postStart", "initContainer", "off", "sometimes"]),
    "concurrency": st.integers(-2, 10_000), "timeoutSeconds": st.integers(-2, 10**7)})
SERVING_OPTIONS = st.fixed_dictionaries({}, optional={
    "mountPath": st.one_of(st.just("/models/x"), TEXT),
    "notReadyPolicy": st.sampled_from(["wait", "deny", "ignore", "maybe"])})
STORE = "@store@"  # replaced by the test's store, so valid specs reconcile against a store that allows them
VALID = {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B", "revision": "main"}}, "store": STORE,
         "download": {"maxWorkers": 4}, "prewarm": {"mode": "postStart"}, "serving": {"notReadyPolicy": "wait"}}
LEAVES = ["source.huggingface.repo", "source.huggingface.revision", "source.huggingface.allowPatterns",
          "source.huggingface.endpoint", "source.huggingface.tokenSecretRef", "source.modelscope.model",
          "store", "storage.nfs.path", "download.image", "download.maxWorkers", "download.backoffLimit",
          "download.activeDeadlineSeconds", "download.nodeSelector", "download.resources.limits", "prewarm.mode",
          "prewarm.concurrency", "serving.mountPath", "serving.notReadyPolicy", "unknownField"]
DELETE = object()
LEAF_VALUES = st.one_of(ANY_SCALAR, st.lists(TEXT, max_size=2), st.dictionaries(SIMPLE, TEXT, max_size=2),
                        st.just(DELETE))
SECTIONS = st.one_of(st.tuples(st.just("source"), SOURCES), st.tuples(st.just("storage"), BACKENDS),
                     st.tuples(st.just("download"), _maybe(DOWNLOAD)), st.tuples(st.just("prewarm"), PREWARM),
                     st.tuples(st.just("serving"), SERVING_OPTIONS))


def _mutated(valid: dict[str, Any], leaves: list[tuple[str, Any]], sections: list[tuple[str, Any]]) -> dict[str, Any]:
    """A valid spec with whole sections swapped for generated ones and single fields set or removed."""
    spec: dict[str, Any] = json.loads(json.dumps(valid))
    for key, value in sections:
        spec[key] = value
    for path, value in leaves:
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return spec


SPECS = st.builds(lambda leaves, sections: _mutated(VALID, leaves, sections),
                  st.lists(st.tuples(st.sampled_from(LEAVES), LEAF_VALUES), max_size=3),
                  st.lists(SECTIONS, max_size=1))


def _no_traceback(operator: OperatorProcess, log_start: int) -> None:
    log = operator.log_text()[log_start:]
    assert "Traceback" not in log, log[log.index("Traceback") - 2000: log.index("Traceback") + 3000]


def _submit_all(strategy: st.SearchStrategy[dict[str, Any]], examples: int,
                create: Callable[[dict[str, Any]], None]) -> Counter[int]:
    """Creates one object per example; returns the refusals by HTTP status, each checked for a message."""
    refused: Counter[int] = Counter()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(spec=strategy)
    def submit(spec: dict[str, Any]) -> None:
        try:
            create(spec)
        except ApiException as error:
            assert 400 <= error.status < 500, f"{error.status} for {spec!r}: {error.body}"
            assert json.loads(error.body)["message"].strip(), f"refused without a message: {spec!r}"
            refused[error.status] += 1

    submit()
    return refused


def test_fuzzed_specs_are_refused_with_a_message_or_reconciled_cleanly(
        k8s: Cluster, namespace: str, operator: OperatorProcess, store: str) -> None:
    log_start = len(operator.log_text())
    counter = itertools.count()
    accepted: list[str] = []

    def create(spec: dict[str, Any]) -> None:
        name = f"fz-{next(counter):04d}"
        spec = json.loads(json.dumps(spec).replace(STORE, store))
        k8s.create_cache(namespace, {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
                                     "spec": spec})
        accepted.append(name)

    refused = _submit_all(SPECS, 150, create)
    assert accepted and refused, f"the fuzz must exercise both outcomes: {len(accepted)} accepted, {refused}"

    def unreconciled() -> list[str]:
        items = k8s.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)["items"]
        phases = {c["metadata"]["name"]: (c.get("status") or {}).get("phase") for c in items}
        return [name for name in accepted if not phases.get(name)]
    wait_for(lambda: not unreconciled(), 180, describe="every accepted cache to get a phase",
             diagnostics=lambda: f"without a phase: {unreconciled()[:10]}\n{operator.log_tail(40)}")
    time.sleep(operator.resync_seconds * 2)  # let resyncs and child events run over them too
    _no_traceback(operator, log_start)


SELECTOR = "@selector@"  # replaced by a selector of the test's namespace
VALID_STORE = {"nfs": {"server": "10.0.0.2", "path": PATH}, "capacity": "10Gi", "namespaceSelector": SELECTOR}
SELECTORS: st.SearchStrategy[Any] = st.one_of(
    st.just(SELECTOR), st.just({}),
    st.fixed_dictionaries({}, optional={
        "matchLabels": st.dictionaries(st.one_of(SIMPLE, TEXT), st.one_of(SIMPLE, TEXT), max_size=2),
        "matchExpressions": st.lists(st.fixed_dictionaries(
            {"key": st.one_of(st.just("kubernetes.io/metadata.name"), SIMPLE, TEXT),
             "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Bogus"])},
            optional={"values": st.lists(st.one_of(SIMPLE, TEXT), max_size=2)}), max_size=2)}),
    ANY_SCALAR)
QUANTITIES = st.one_of(st.sampled_from(["10Gi", "1Ti", "500M", "0", "-1Gi", "1.5Gi", "1e3"]), TEXT,
                       st.integers(-5, 10**12))
STORE_SECTIONS = st.one_of(
    st.tuples(st.just("namespaceSelector"), SELECTORS),
    st.tuples(st.just("retention"), _maybe(st.fixed_dictionaries({}, optional={
        "policy": st.sampled_from(["Retain", "Delete", "Recycle", ""]),
        "ttlSecondsAfterUnused": st.integers(-5, 10**9), "keepRevisions": st.integers(-2, 1000)}))),
    st.tuples(st.just("hubCredentials"), _maybe(st.fixed_dictionaries({}, optional={
        "huggingface": _maybe(st.fixed_dictionaries({"name": SIMPLE}, optional={"key": TEXT})),
        "modelscope": st.fixed_dictionaries({"name": SIMPLE})}))))
STORE_LEAVES = ["nfs.server", "nfs.path", "nfs.mountOptions", "capacity", "quota", "default", "retention.policy",
                "retention.ttlSecondsAfterUnused", "retention.keepRevisions", "hubCredentials.huggingface.name",
                "namespaceSelector", "efs.fileSystemId", "hostPath.path", "unknownField"]
STORE_LEAF_VALUES = st.one_of(LEAF_VALUES, QUANTITIES, st.just(PATH))


def _store_mutated(backend: dict[str, Any] | None, leaves: list[tuple[str, Any]],
                   sections: list[tuple[str, Any]]) -> dict[str, Any]:
    """VALID_STORE with its nfs backend swapped for a generated one (when `backend` is set), sections swapped
    and single fields set or removed."""
    base: dict[str, Any] = json.loads(json.dumps(VALID_STORE))
    if backend is not None:
        base.pop("nfs")
        base.update(backend)
    return _mutated(base, leaves, sections)


STORE_SPECS = st.builds(_store_mutated, st.one_of(st.none(), BACKENDS),
                        st.lists(st.tuples(st.sampled_from(STORE_LEAVES), STORE_LEAF_VALUES), max_size=1),
                        st.lists(STORE_SECTIONS, max_size=1))


def test_fuzzed_store_specs_are_refused_with_a_message_or_reconciled_cleanly(
        k8s: Cluster, namespace: str, operator: OperatorProcess) -> None:
    """Fuzzed ModelStores, each with a cache in the test's namespace naming it: refused with a message, or the
    store and its cache both get a phase, and the operator logs no traceback."""
    log_start = len(operator.log_text())
    run = uuid.uuid4().hex[:6]
    counter = itertools.count()
    accepted: list[str] = []
    selector = json.dumps({"matchLabels": {"kubernetes.io/metadata.name": namespace}})

    def create(spec: dict[str, Any]) -> None:
        name = f"fz-{run}-{next(counter):03d}"
        text = json.dumps(spec).replace(json.dumps(SELECTOR), selector)
        spec = json.loads(text.replace(PATH, f"/exports/fuzz-{uuid.uuid4().hex}"))
        k8s.create_store({"apiVersion": api.API_VERSION, "kind": api.STORE_KIND, "metadata": {"name": name},
                          "spec": spec})
        accepted.append(name)
        k8s.create_cache(namespace, cache_manifest(name, name))

    try:
        refused = _submit_all(STORE_SPECS, 100, create)
        assert accepted and refused, f"the fuzz must exercise both outcomes: {len(accepted)} accepted, {refused}"

        def unreconciled() -> list[str]:
            caches = {c["metadata"]["name"]: (c.get("status") or {}).get("phase") for c in
                      k8s.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace,
                                                               api.PLURAL)["items"]}
            stores = {s["metadata"]["name"]: (s.get("status") or {}).get("phase") for s in
                      k8s.custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.STORE_PLURAL)["items"]}
            return [f"store {n}" for n in accepted if not stores.get(n)] + \
                [f"cache {n}" for n in accepted if not caches.get(n)]
        wait_for(lambda: not unreconciled(), 180, describe="every accepted store and its cache to get a phase",
                 diagnostics=lambda: f"without a phase: {unreconciled()[:10]}\n{operator.log_tail(40)}")
        time.sleep(operator.resync_seconds * 2)
        _no_traceback(operator, log_start)
    finally:
        for name in accepted:
            k8s.delete_store(name)
