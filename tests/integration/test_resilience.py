"""Resilience on the real control plane: operator SIGKILLs, apiserver and etcd restarts, hub failures with
the real downloader, storage clashes, and fuzzed specs. Every test leaves the shared cluster and operator
healthy for the tests after it."""

from __future__ import annotations

import base64
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import FAILING_NODE, FAILING_NODE_TAINT, LocalCluster
from modelcache_operator.api import v1alpha1 as api
from modelcache_operator.builders import naming
from modelcache_operator.downloader.errors import ExitCode
from modelcache_operator.downloader.lock import LOCK_NAME
from modelcache_operator.downloader.manifest import verify_manifest
from modelcache_operator.downloader.report import KubernetesStatusReporter
from tests.hubs.huggingface import HuggingFaceHub
from tests.support.downloader_role import publish
from tests.support.kube import Cluster, wait_for
from tests.support.operator import WEBHOOK_CONFIG_NAME, OperatorProcess
from tests.support.serviceaccount import serviceaccount_kubeconfig

pytestmark = pytest.mark.integration

DOWNLOADERS = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY},{naming.LABEL_ROLE}=downloader"
MANAGED = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"
ON_FAILING_NODE = {"nodeSelector": {"kubernetes.io/hostname": FAILING_NODE},
                   "tolerations": [{"key": FAILING_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}


def nfs_cache(name: str, path: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}},
        "storage": {"nfs": {"server": "10.0.0.2", "path": path or f"/exports/{uuid.uuid4().hex}"},
                    "capacity": "10Gi"},
    }
    body.update(spec)
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": body}


# ----- many caches: a downloader stand-in, and counting what exists -----

class DownloaderPlayer(threading.Thread):
    """Publishes each cache's Job as its downloader would, as soon as the Job exists, until stopped.

    Every pass re-reads the cluster and publishes again for caches whose report did not land (the reporter
    only logs errors, like the real one), so an apiserver outage delays reports but never loses them."""

    def __init__(self, k8s: Cluster, namespace: str):
        super().__init__(daemon=True)
        self.k8s, self.namespace = k8s, namespace
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.3):
            try:
                self._pass()
            except Exception:  # the apiserver may be restarting: try again on the next pass
                continue

    def _pass(self) -> None:
        jobs = {j.metadata.labels[naming.LABEL_CACHE]: j.metadata.name
                for j in self.k8s.batch.list_namespaced_job(self.namespace, label_selector=DOWNLOADERS).items}
        caches = self.k8s.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, self.namespace,
                                                               api.PLURAL)["items"]
        for cache in caches:
            name = cache["metadata"]["name"]
            report = (cache.get("status") or {}).get("download") or {}
            if name in jobs and (report.get("state"), report.get("jobName")) != ("Published", jobs[name]):
                publish(KubernetesStatusReporter(self.k8s.client, self.namespace, name, min_interval=0), jobs[name])

    def __enter__(self) -> DownloaderPlayer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(timeout=10)


def create_caches(k8s: Cluster, namespace: str, count: int, prefix: str = "c") -> list[str]:
    names = [f"{prefix}-{i:03d}" for i in range(count)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: k8s.create_cache(namespace, nfs_cache(n)), names))
    return names


def ready_count(k8s: Cluster, namespace: str) -> int:
    items = k8s.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)["items"]
    return sum((c.get("status") or {}).get("phase") == "Ready" for c in items)


def wait_all_ready(k8s: Cluster, namespace: str, count: int, operator: OperatorProcess,
                   timeout: float = 180) -> None:
    def probe() -> bool:
        try:
            return ready_count(k8s, namespace) == count
        except Exception:  # an apiserver that is still coming back: poll again
            return False
    wait_for(probe, timeout, interval=0.5, describe=f"{count} caches Ready in {namespace}",
             diagnostics=lambda: f"ready: {ready_count(k8s, namespace)}\n{operator.log_tail(30)}")


def child_uids(k8s: Cluster, namespace: str) -> dict[str, dict[str, set[str]]]:
    """Per cache, the UIDs of its download Jobs, PVCs and PVs."""
    found: dict[str, dict[str, set[str]]] = {}

    def add(cache: str, kind: str, uid: str) -> None:
        found.setdefault(cache, {"job": set(), "pvc": set(), "pv": set()})[kind].add(uid)
    for job in k8s.batch.list_namespaced_job(namespace, label_selector=DOWNLOADERS).items:
        add(job.metadata.labels[naming.LABEL_CACHE], "job", job.metadata.uid)
    for pvc in k8s.core.list_namespaced_persistent_volume_claim(namespace, label_selector=MANAGED).items:
        add(pvc.metadata.labels[naming.LABEL_CACHE], "pvc", pvc.metadata.uid)
    selector = f"{MANAGED},{naming.LABEL_CACHE_NAMESPACE}={naming.label_value(namespace)}"
    for pv in k8s.core.list_persistent_volume(label_selector=selector).items:
        add(pv.metadata.labels[naming.LABEL_CACHE], "pv", pv.metadata.uid)
    return found


def merge(into: dict[str, dict[str, set[str]]], snapshot: dict[str, dict[str, set[str]]]) -> None:
    for cache, kinds in snapshot.items():
        for kind, uids in kinds.items():
            into.setdefault(cache, {"job": set(), "pvc": set(), "pv": set()})[kind] |= uids


def assert_one_of_each(seen: dict[str, dict[str, set[str]]], names: list[str]) -> None:
    """Every cache had exactly one Job, PVC and PV over the whole run (UIDs from every snapshot)."""
    assert sorted(seen) == sorted(names)
    wrong = {cache: {k: len(v) for k, v in kinds.items()} for cache, kinds in seen.items()
             if any(len(v) != 1 for v in kinds.values())}
    assert wrong == {}, f"caches without exactly one Job/PVC/PV: {wrong}"


def test_operator_sigkilled_at_random_points_converges_without_duplicates(
        k8s: Cluster, namespace: str, operator: OperatorProcess) -> None:
    rng = random.Random(20261121)
    seen: dict[str, dict[str, set[str]]] = {}
    with DownloaderPlayer(k8s, namespace):
        names = create_caches(k8s, namespace, 40)
        try:
            for _ in range(4):
                time.sleep(rng.uniform(0.3, 3.0))
                operator.kill()
                merge(seen, child_uids(k8s, namespace))
                time.sleep(rng.uniform(0.0, 1.5))
                operator.start()
        finally:
            if operator.process is None or operator.process.poll() is not None:
                operator.start()  # never leave the shared operator dead
        wait_all_ready(k8s, namespace, len(names), operator)
    time.sleep(operator.resync_seconds * 2)  # a late duplicate would show up now
    merge(seen, child_uids(k8s, namespace))
    assert_one_of_each(seen, names)


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_restart_during_reconciliation(component: str, k8s: Cluster, namespace: str,
                                                     operator: OperatorProcess,
                                                     local_cluster: LocalCluster) -> None:
    seen: dict[str, dict[str, set[str]]] = {}
    with DownloaderPlayer(k8s, namespace):
        names = create_caches(k8s, namespace, 30)
        time.sleep(1.5)  # some caches have Jobs, some are still provisioning
        merge(seen, child_uids(k8s, namespace))
        if component == "etcd":
            local_cluster.restart_etcd(downtime=2.0)
        else:
            local_cluster.restart_apiserver()
        wait_all_ready(k8s, namespace, len(names), operator)
        # The watches reconnected by themselves: a cache created after the restart converges too.
        k8s.create_cache(namespace, nfs_cache("after-restart"))
        names.append("after-restart")
        wait_all_ready(k8s, namespace, len(names), operator, timeout=60)
    time.sleep(operator.resync_seconds * 2)
    merge(seen, child_uids(k8s, namespace))
    assert_one_of_each(seen, names)
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


def hub_cache(name: str, hub: HuggingFaceHub, repo: str = HUB_REPO, **spec: Any) -> dict[str, Any]:
    source = {"huggingface": {"repo": repo, "endpoint": hub.url,
                              "tokenSecretRef": {"name": "hf-token", "key": "HF_TOKEN"}}}
    return nfs_cache(name, source=source, **spec)


def run_job_downloader(k8s: Cluster, cluster: LocalCluster, namespace: str, job: Any, workdir: Path,
                       **extra: str) -> subprocess.CompletedProcess[str]:
    """The Job's container command on the host, with the Job's env (secretKeyRef resolved as the kubelet
    would), authenticated as the Job's ServiceAccount; the PVC mount is mapped to workdir/volume."""
    workdir.mkdir(parents=True, exist_ok=True)
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


def cache_events(k8s: Cluster, namespace: str, name: str) -> list[Any]:
    return [e for e in k8s.events(namespace) if e.involved_object.name == name]


def job_of(k8s: Cluster, namespace: str, cache: str, not_named: str | None = None) -> Any:
    return wait_for(lambda: next((j for j in k8s.jobs(namespace, cache) if j.metadata.name != not_named), None),
                    30, describe=f"a download Job of {cache}")


def test_hub_500s_then_recovery_ends_ready_with_bounded_backoff(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster,
        hub: HuggingFaceHub, tmp_path: Path) -> None:
    token_secret(k8s, namespace, HUB_TOKEN)
    k8s.create_cache(namespace, hub_cache("flaky", hub))
    job = job_of(k8s, namespace, "flaky")
    hub.faults.fail_first = 4
    result = run_job_downloader(k8s, local_cluster, namespace, job, tmp_path, MC_RETRIES="5")
    assert result.returncode == 0, result.stderr
    assert hub.faults.fail_first == 0
    retries = [line for line in result.stderr.splitlines() if "; retry " in line]
    # Four 500s, four retries (of at most 5), each waiting twice as long as the one before.
    assert len(retries) == 4, result.stderr
    assert [line.rsplit(" in ", 1)[1] for line in retries] == ["0.2s", "0.4s", "0.8s", "1.6s"]
    ready = k8s.wait_phase(namespace, "flaky", "Ready", diagnostics=operator.log_tail)
    assert ready["status"]["resolvedRevision"] == hub.repos[HUB_REPO].sha
    assert ready["status"]["fileCount"] == 2
    # kopf posts events asynchronously, so they may trail the status write.
    def published_events() -> list[Any] | None:
        found = cache_events(k8s, namespace, "flaky")
        return found if {"Published", "Ready"} <= {e.reason for e in found} else None
    events = wait_for(published_events, 15, describe="the Published and Ready events")
    assert not [e for e in events if e.type == "Warning"], "transient 500s must not surface as failures"
    assert len(k8s.jobs(namespace, "flaky")) == 1


@pytest.mark.parametrize(("problem", "exit_code"), [("Unauthorized", ExitCode.UNAUTHORIZED),
                                                    ("NotFound", ExitCode.NOT_FOUND)])
def test_permanent_hub_error_fails_once_with_reason_and_fix_recovers(
        problem: str, exit_code: int, k8s: Cluster, namespace: str, operator: OperatorProcess,
        local_cluster: LocalCluster, hub: HuggingFaceHub, tmp_path: Path) -> None:
    """The real downloader meets a 401 or 404 and exits non-retryable; kwok's failing node makes the Job's pod
    exit 11 so the real Job controller's podFailurePolicy fails the Job at once. The cache is Failed with
    the downloader's reason; fixing the Secret (plus the retry annotation) or the repo recovers it."""
    token_secret(k8s, namespace, HUB_TOKEN if problem == "NotFound" else "hf_wrong_token")
    repo = "acme/does-not-exist" if problem == "NotFound" else HUB_REPO
    k8s.create_cache(namespace, hub_cache("broken", hub, repo=repo, download=ON_FAILING_NODE))
    job = job_of(k8s, namespace, "broken")
    result = run_job_downloader(k8s, local_cluster, namespace, job, tmp_path / "first")
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
    condition = wait_for(failed_with_reason, 30, describe=f"Failed with reason {problem}",
                         diagnostics=lambda: json.dumps(k8s.get_cache(namespace, "broken")))
    assert condition["message"].strip()
    assert "hf_wrong_token" not in json.dumps(k8s.get_cache(namespace, "broken"))
    # No retry storm: the Job failed once, its one pod was not replaced, and nothing new starts.
    time.sleep(operator.resync_seconds * 3)
    jobs = k8s.jobs(namespace, "broken")
    assert [j.metadata.name for j in jobs] == [job.metadata.name]
    assert jobs[0].status.failed == 1
    pods = k8s.core.list_namespaced_pod(namespace, label_selector=f"job-name={job.metadata.name}").items
    assert len(pods) == 1
    warnings = [e for e in cache_events(k8s, namespace, "broken") if e.type == "Warning"]
    assert problem in {e.reason for e in warnings}
    assert sum(e.count or 1 for e in warnings) <= 6, [(e.reason, e.count) for e in warnings]

    if problem == "Unauthorized":
        k8s.core.patch_namespaced_secret("hf-token", namespace, {"stringData": {"HF_TOKEN": HUB_TOKEN}})
        fix: dict[str, Any] = {"metadata": {"annotations": {naming.ANNOTATION_RETRY: "1"}}, "spec": {}}
    else:
        fix = {"spec": {"source": {"huggingface": {"repo": HUB_REPO}}}}
    fix["spec"]["download"] = {"nodeSelector": None, "tolerations": None}
    k8s.patch_cache(namespace, "broken", fix)
    second = job_of(k8s, namespace, "broken", not_named=job.metadata.name)
    result = run_job_downloader(k8s, local_cluster, namespace, second, tmp_path / "second")
    assert result.returncode == 0, result.stderr
    ready = k8s.wait_phase(namespace, "broken", "Ready", diagnostics=operator.log_tail)
    assert ready["status"]["resolvedRevision"] == hub.repos[HUB_REPO].sha


# ----- two caches, one storage location -----

def test_webhook_refuses_the_same_storage_in_another_namespace(k8s: Cluster, namespace: str,
                                                               operator: OperatorProcess) -> None:
    other = f"t-other-{uuid.uuid4().hex[:6]}"
    k8s.core.create_namespace({"metadata": {"name": other}})
    try:
        first = nfs_cache("owner")
        k8s.create_cache(namespace, first)
        squatter = nfs_cache("squatter")
        # The same export, spelled differently: server case and a trailing slash do not make it another path.
        squatter["spec"]["storage"]["nfs"] = {"server": "10.0.0.2".upper(),
                                              "path": first["spec"]["storage"]["nfs"]["path"] + "/"}

        def refused() -> str | None:
            try:
                k8s.create_cache(other, squatter)
            except ApiException as error:
                assert error.status == 422, error.body
                return str(error.body)
            k8s.delete_cache(other, "squatter")  # the webhook's index had not seen the first cache yet
            return None
        message = wait_for(refused, 20, describe="the cross-namespace clash to be refused")
        assert f"{namespace}/owner" in message and "spec.storage.nfs" in message
        nested = nfs_cache("nested", path=first["spec"]["storage"]["nfs"]["path"] + "/sub")
        with pytest.raises(ApiException) as inside:
            k8s.create_cache(other, nested)
        assert "is inside" in str(inside.value.body)
    finally:
        k8s.core.delete_namespace(other)


def test_clashing_caches_that_slipped_past_the_webhook_never_both_get_a_job(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster) -> None:
    """With the operator down and its validating webhook configuration gone, two caches on one path are
    admitted. The operator lets the earlier one proceed and holds the later one as StorageConflict, without
    a PV, PVC or Job, until the earlier one is deleted."""
    path = f"/exports/{uuid.uuid4().hex}"
    admission = kubernetes.client.AdmissionregistrationV1Api(k8s.client)
    operator.kill()
    try:
        admission.delete_validating_webhook_configuration(WEBHOOK_CONFIG_NAME)
        k8s.create_cache(namespace, nfs_cache("first", path=path))
        time.sleep(1.1)  # creationTimestamp has one-second resolution: make "first" strictly earlier
        k8s.create_cache(namespace, nfs_cache("second", path=path))
    finally:
        operator.start()  # registers the webhook configuration again
    wait_for(lambda: admission.list_validating_webhook_configuration(
        field_selector=f"metadata.name={WEBHOOK_CONFIG_NAME}").items, 30, describe="the webhook back")

    first_job = job_of(k8s, namespace, "first")
    pending = k8s.wait_phase(namespace, "second", "Pending", diagnostics=operator.log_tail)
    ready = k8s.condition(pending, "Ready")
    assert ready["reason"] == "StorageConflict" and f"{namespace}/first" in ready["message"]
    time.sleep(operator.resync_seconds * 2)
    assert k8s.jobs(namespace, "second") == []
    assert child_uids(k8s, namespace).keys() == {"first"}
    assert "StorageConflict" in {e.reason for e in cache_events(k8s, namespace, "second") if e.type == "Warning"}

    publish(KubernetesStatusReporter(k8s.client, namespace, "first", min_interval=0), first_job.metadata.name)
    k8s.wait_phase(namespace, "first", "Ready")
    k8s.delete_cache(namespace, "first")
    wait_for(lambda: k8s.get_cache(namespace, "first") is None, 30, describe="first deleted",
             diagnostics=operator.log_tail)
    second_job = job_of(k8s, namespace, "second")  # the storage is free now: the later cache proceeds
    publish(KubernetesStatusReporter(k8s.client, namespace, "second", min_interval=0), second_job.metadata.name)
    k8s.wait_phase(namespace, "second", "Ready", diagnostics=operator.log_tail)


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


# ----- fuzzed specs against the CRD schema, the webhook and the reconciler -----

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
BACKENDS = st.one_of(
    st.fixed_dictionaries({"nfs": st.fixed_dictionaries({"server": st.one_of(SIMPLE, TEXT), "path": TEXT},
                                                        optional={"mountOptions": st.lists(TEXT, max_size=2)})}),
    st.fixed_dictionaries({"ossfs2": st.fixed_dictionaries(
        {"bucket": st.one_of(SIMPLE, TEXT), "path": TEXT, "url": st.one_of(SIMPLE, TEXT)},
        optional={"authType": st.sampled_from(["rrsa", "secret", "bogus"]), "roleName": SIMPLE,
                  "secretRef": st.fixed_dictionaries({"name": SIMPLE}), "otherOpts": TEXT})}),
    st.fixed_dictionaries({"efs": st.fixed_dictionaries({"fileSystemId": st.one_of(SIMPLE, TEXT)},
                                                        optional={"accessPointId": SIMPLE, "path": TEXT})}),
    st.fixed_dictionaries({"storageClass": st.fixed_dictionaries({"name": st.one_of(SIMPLE, TEXT)})}),
    st.fixed_dictionaries({"hostPath": st.fixed_dictionaries({"path": TEXT})}),
    st.dictionaries(TEXT, ANY_SCALAR, max_size=2))
STORAGE = st.tuples(BACKENDS, st.fixed_dictionaries({}, optional={
    "capacity": st.one_of(st.sampled_from(["10Gi", "1Ti", "500M", "0", "-1Gi", "1.5Gi", "1e3"]), TEXT,
                          st.integers(-5, 10**12)),
    "reclaimPolicy": st.sampled_from(["Retain", "Delete", "Recycle", ""])})).map(lambda t: {**t[0], **t[1]})
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
SERVING = st.fixed_dictionaries({}, optional={
    "mountPath": st.one_of(st.just("/models/x"), TEXT),
    "notReadyPolicy": st.sampled_from(["wait", "deny", "ignore", "maybe"])})
UNIQUE = "@unique@"  # replaced by a fresh path per example, so valid specs do not all clash with each other
VALID = {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B", "revision": "main"}},
         "storage": {"nfs": {"server": "10.0.0.2", "path": UNIQUE}, "capacity": "10Gi"},
         "download": {"maxWorkers": 4}, "prewarm": {"mode": "postStart"}, "serving": {"notReadyPolicy": "wait"}}
LEAVES = ["source.huggingface.repo", "source.huggingface.revision", "source.huggingface.allowPatterns",
          "source.huggingface.endpoint", "source.huggingface.tokenSecretRef", "source.modelscope.model",
          "storage.nfs.server", "storage.nfs.path", "storage.nfs.mountOptions", "storage.capacity",
          "storage.reclaimPolicy", "storage.efs.fileSystemId", "download.image", "download.maxWorkers",
          "download.backoffLimit", "download.activeDeadlineSeconds", "download.nodeSelector",
          "download.resources.limits", "prewarm.mode", "prewarm.concurrency", "serving.mountPath",
          "serving.notReadyPolicy", "unknownField"]
DELETE = object()
LEAF_VALUES = st.one_of(ANY_SCALAR, st.lists(TEXT, max_size=2), st.dictionaries(SIMPLE, TEXT, max_size=2),
                        st.just(DELETE))
SECTIONS = st.one_of(st.tuples(st.just("source"), SOURCES), st.tuples(st.just("storage"), STORAGE),
                     st.tuples(st.just("download"), _maybe(DOWNLOAD)), st.tuples(st.just("prewarm"), PREWARM),
                     st.tuples(st.just("serving"), SERVING))


def _mutated(leaves: list[tuple[str, Any]], sections: list[tuple[str, Any]]) -> dict[str, Any]:
    """A valid spec with whole sections swapped for generated ones and single fields set or removed."""
    spec: dict[str, Any] = json.loads(json.dumps(VALID))
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


SPECS = st.builds(_mutated, st.lists(st.tuples(st.sampled_from(LEAVES), LEAF_VALUES), max_size=3),
                  st.lists(SECTIONS, max_size=1))


def test_fuzzed_specs_are_refused_with_a_message_or_reconciled_cleanly(
        k8s: Cluster, namespace: str, operator: OperatorProcess) -> None:
    log_start = len(operator.log_text())
    counter = itertools.count()
    accepted: list[str] = []
    refused: Counter[int] = Counter()

    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(spec=SPECS)
    def submit(spec: dict[str, Any]) -> None:
        name = f"fz-{next(counter):04d}"
        spec = json.loads(json.dumps(spec).replace(UNIQUE, f"/exports/fuzz-{uuid.uuid4().hex}"))
        manifest = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec}
        try:
            k8s.create_cache(namespace, manifest)
        except ApiException as error:
            assert 400 <= error.status < 500, f"{error.status} for {spec!r}: {error.body}"
            assert json.loads(error.body)["message"].strip(), f"refused without a message: {spec!r}"
            refused[error.status] += 1
            return
        accepted.append(name)

    submit()
    assert accepted and refused, f"the fuzz must exercise both outcomes: {len(accepted)} accepted, {refused}"

    def unreconciled() -> list[str]:
        items = k8s.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)["items"]
        phases = {c["metadata"]["name"]: (c.get("status") or {}).get("phase") for c in items}
        return [name for name in accepted if not phases.get(name)]
    wait_for(lambda: not unreconciled(), 90, describe="every accepted cache to get a phase",
             diagnostics=lambda: f"without a phase: {unreconciled()[:10]}\n{operator.log_tail(40)}")
    time.sleep(operator.resync_seconds * 2)  # let resyncs and child events run over them too
    log = operator.log_text()[log_start:]
    assert "Traceback" not in log, log[log.index("Traceback") - 2000: log.index("Traceback") + 3000]
