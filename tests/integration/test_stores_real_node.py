"""Stores on the real node, with real files: one download shared by several namespaces, read-only serving
mounts, revision changes that never leave new pods without a complete revision, and retention (TTL and LRU
eviction under quota) that never removes a folder in use. Download, cleanup and serving pods all run as
containers under the real kubelet; the hub counts the bytes it serves."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelcache_devcluster.node import GATEWAY
from modelcache_operator.api.names import ANN_DOWNLOADS, ANN_PINNED, LABEL_INJECT
from modelcache_operator.builders import naming
from tests.hubs import package_model_files
from tests.hubs.huggingface import HuggingFaceHub
from tests.support.demo_flow import CRD_DIR
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import OperatorProcess
from tests.support.real_node import SERVING_IMAGE
from tests.support.real_node_flow import NODE_SELECTOR, TOLERATIONS, RealNodeCluster

pytestmark = pytest.mark.integration
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MiB = 1 << 20
READY_TIMEOUT = 240


@dataclass
class Env:
    k8s: Cluster
    hub: HuggingFaceHub
    operator: OperatorProcess
    volume: Path
    stores: list[str] = field(default_factory=list)

    def store(self, prefix: str, **spec: Any) -> str:
        """A hostPath store under its own root, allowing namespaces labelled for this module."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        root = self.volume / name
        root.mkdir(parents=True)
        self.k8s.create_store({"apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelStore",
                               "metadata": {"name": name},
                               "spec": {"hostPath": {"path": str(root)}, "capacity": "10Gi",
                                        "namespaceSelector": {"matchLabels": {"stores-test": "yes"}}, **spec}})
        self.stores.append(name)
        self.k8s.wait_store_ready(name)
        return name

    def root(self, store: str) -> Path:
        return self.volume / store

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.k8s.ensure_namespace(name, {"stores-test": "yes"})
        wait_for(lambda: self.k8s.core.list_namespaced_service_account(name).items, 30,
                 describe=f"namespace {name} ready")
        return name

    def cache(self, namespace: str, name: str, repo: str, store: str, **source: Any) -> None:
        self.k8s.create_cache(namespace, {
            "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache", "metadata": {"name": name},
            "spec": {"source": {"huggingface": {"repo": repo, "endpoint": self.hub.url, **source}}, "store": store,
                     "download": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS,
                                  "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                "limits": {"memory": "1Gi"}}}}})

    def ready(self, namespace: str, name: str) -> dict[str, Any]:
        return self.k8s.wait_phase(namespace, name, "Ready", timeout=READY_TIMEOUT, diagnostics=self.diagnostics)

    def diagnostics(self) -> str:
        pods = self.k8s.core.list_pod_for_all_namespaces(label_selector="modelcache.dev/role").items
        lines = [f"{p.metadata.namespace}/{p.metadata.name} {p.spec.node_name} {p.status.phase}" for p in pods]
        return "\n".join([*lines, self.operator.log_tail(30)])


@contextlib.contextmanager
def running_env(real_cluster: RealNodeCluster, prefix: str,
                extra_env: dict[str, str] | None = None) -> Iterator[Env]:
    """The CRDs, a loopback hub serving MINILM on the node's gateway and a host operator allowed hostPath."""
    cluster = real_cluster.cluster
    cluster.install_crds(CRD_DIR)
    k8s = real_cluster.k8s
    k8s.ensure_namespace(OPERATOR_NAMESPACE)
    hub = HuggingFaceHub(host=GATEWAY)
    hub.add_repo(MINILM, dict(package_model_files()))
    hub.start()
    workdir = real_cluster.workdir / f"{prefix}-{uuid.uuid4().hex[:6]}"
    operator = OperatorProcess(cluster.state.kubeconfig, workdir / "operator", resync_seconds=2,
                               allow_host_path=True, extra_env=extra_env)
    operator.start()
    volume = workdir / "volume"
    volume.mkdir(parents=True)
    try:
        yield Env(k8s, hub, operator, volume)
    finally:
        operator.stop()
        hub.stop()


@pytest.fixture(scope="module")
def env(real_cluster: RealNodeCluster) -> Iterator[Env]:
    with running_env(real_cluster, "stores") as environment:
        yield environment


def holder_pod(env: Env, namespace: str, name: str, cache: str, script: str = "import time; time.sleep(3600)",
               ) -> dict[str, Any]:
    """A labelled pod on the real node that mounts `cache` through the webhook and runs `script`."""
    env.k8s.core.create_namespaced_pod(namespace, {
        "metadata": {"name": name, "labels": {LABEL_INJECT: "true"},
                     "annotations": {"modelcache.dev/caches": cache, "modelcache.dev/prewarm": "off"}},
        "spec": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS, "terminationGracePeriodSeconds": 1,
                 "restartPolicy": "Never",
                 "containers": [{"name": "server", "image": SERVING_IMAGE,
                                 "command": ["/opt/serve/bin/python", "-c", script],
                                 "resources": {"limits": {"memory": "256Mi"}}}]}})
    pod = wait_for(lambda: _phase(env, namespace, name, "Running"), 120, interval=0.5,
                   describe=f"pod {name} Running on the real node", diagnostics=env.diagnostics)
    return pod.to_dict()  # type: ignore[no-any-return]


def _phase(env: Env, namespace: str, name: str, phase: str) -> Any:
    pod = env.k8s.core.read_namespaced_pod(name, namespace)
    return pod if pod.status.phase == phase else None


def delete_pod(env: Env, namespace: str, name: str) -> None:
    env.k8s.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    wait_for(lambda: not env.k8s.core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}").items,
             60, describe=f"pod {name} gone")


def revisions_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if folder.is_dir() else []


# ----- sharing -----

@dataclass(frozen=True)
class Shared:
    store: str
    namespaces: list[str]
    caches: list[dict[str, Any]]
    served: dict[str, int]  # bytes the hub served per file, during the three caches' download


@pytest.fixture(scope="module")
def shared(env: Env) -> Shared:
    store = env.store("shared")
    namespaces = [env.namespace(f"team-{i}") for i in range(3)]
    before = dict(env.hub.bytes_served)
    for namespace in namespaces:
        env.cache(namespace, "minilm", MINILM, store)
    caches = [env.ready(namespace, "minilm") for namespace in namespaces]
    served = {path: env.hub.bytes_served[path] - before.get(path, 0) for path in package_model_files()}
    return Shared(store, namespaces, caches, served)


def test_three_namespaces_one_download_one_job_one_folder(env: Env, shared: Shared) -> None:
    refs = {json.dumps(c["status"]["downloadRef"], sort_keys=True) for c in shared.caches}
    assert len(refs) == 1, refs
    ref = shared.caches[0]["status"]["downloadRef"]
    assert ref["namespace"] == OPERATOR_NAMESPACE and ref["shared"] is True
    assert ref["requestedBy"] in {f"{ns}/minilm" for ns in shared.namespaces}
    assert [j.metadata.name for j in env.k8s.download_jobs(ref["name"])] == [naming.download_job_name(ref["name"])]
    # The hub served every byte exactly once, for three namespaces.
    sizes = {path: os.path.getsize(p) for path, p in package_model_files().items()}
    assert shared.served == sizes
    revision = shared.caches[0]["status"]["resolvedRevision"]
    assert revisions_in(env.root(shared.store) / "hf" / MINILM / "all") == [revision]
    assert {c["status"]["revisionPath"] for c in shared.caches} == {f"all/{revision}"}


def test_each_namespace_gets_its_own_read_only_claim(env: Env, shared: Shared) -> None:
    for namespace in shared.namespaces:
        pvc = env.k8s.core.read_namespaced_persistent_volume_claim(naming.pvc_name("minilm"), namespace)
        assert pvc.spec.access_modes == ["ReadOnlyMany"] and pvc.status.phase == "Bound"
        pv = env.k8s.core.read_persistent_volume(pvc.spec.volume_name)
        assert pv.spec.claim_ref.namespace == namespace
        assert pv.spec.host_path.path == str(env.root(shared.store) / "hf" / MINILM)


def test_a_write_into_a_served_cache_fails_with_erofs(env: Env, shared: Shared) -> None:
    namespace = shared.namespaces[0]
    script = ("import errno, os, time\n"
              "for target in (os.environ['MODEL_DIR'] + '/probe', os.environ['MODEL_DIR'] + '/config.json'):\n"
              "    try:\n"
              "        open(target, 'a').close()\n"
              "        print('write', target, 'ok', flush=True)\n"
              "    except OSError as e:\n"
              "        print('write', target, errno.errorcode[e.errno], flush=True)\n"
              "time.sleep(3600)\n")
    holder_pod(env, namespace, "writer", "minilm", script)
    def attempts() -> str | None:
        text = str(env.k8s.core.read_namespaced_pod_log("writer", namespace))
        return text if text.count("write") == 2 else None
    log = wait_for(attempts, 60, describe="the writer's two attempts")
    delete_pod(env, namespace, "writer")
    assert log.splitlines() == ["write /models/minilm/probe EROFS", "write /models/minilm/config.json EROFS"]


def test_other_file_filters_get_their_own_folder(env: Env, shared: Shared) -> None:
    namespace = shared.namespaces[0]
    env.cache(namespace, "minilm-json", MINILM, shared.store, allowPatterns=["*.json"])
    cache = env.ready(namespace, "minilm-json")
    filtered = cache["status"]["revisionPath"].split("/")[0]
    assert filtered.startswith("f-") and cache["status"]["downloadRef"] != shared.caches[0]["status"]["downloadRef"]
    folder = env.root(shared.store) / "hf" / MINILM / filtered / cache["status"]["resolvedRevision"]
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
                   and ".modelcache" not in p.parts)
    assert files == sorted(p for p in package_model_files() if p.endswith(".json"))


def test_deleting_a_cache_keeps_the_files_and_the_others(env: Env, shared: Shared) -> None:
    namespace = shared.namespaces[2]
    ref = shared.caches[2]["status"]["downloadRef"]
    env.k8s.delete_cache(namespace, "minilm")
    wait_for(lambda: env.k8s.get_cache(namespace, "minilm") is None, 30, describe="the cache gone")
    wait_for(lambda: not env.k8s.core.list_namespaced_persistent_volume_claim(namespace).items, 30,
             describe="its claim gone")
    revision = shared.caches[2]["status"]["resolvedRevision"]
    assert revisions_in(env.root(shared.store) / "hf" / MINILM / "all") == [revision]
    download = env.k8s.get_download(ref["namespace"], ref["name"])
    assert download is not None and download["status"]["phase"] == "Ready"
    assert [j.metadata.name for j in env.k8s.download_jobs(ref["name"])] == [naming.download_job_name(ref["name"])]
    assert not env.k8s.batch.list_job_for_all_namespaces(label_selector="modelcache.dev/role=cleanup").items
    for other in shared.namespaces[:2]:
        assert (env.k8s.get_cache(other, "minilm") or {})["status"]["phase"] == "Ready"


# ----- revisions and retention -----

def synthetic_repo(env: Env, repo: str, size: int, seed: str) -> tuple[str, str]:
    """A one-file model of exactly `size` bytes; returns (commit, file name)."""
    name = f"{repo.split('/')[1]}-{seed}.bin"
    data = (seed.encode() * (size // len(seed) + 1))[:size]
    return env.hub.add_repo(repo, {name: data, "config.json": b"{}"}), name


def pinned(env: Env, namespace: str, pod: str) -> tuple[str, str]:
    annotations = env.k8s.core.read_namespaced_pod(pod, namespace).metadata.annotations
    return json.loads(annotations[ANN_PINNED])["model"], json.loads(annotations[ANN_DOWNLOADS])["model"]


def test_revision_change_serves_the_old_revision_until_publish_then_collects_it(env: Env) -> None:
    store = env.store("revs", retention={"policy": "Delete", "ttlSecondsAfterUnused": 4, "keepRevisions": 1})
    namespace = env.namespace("rev")
    repo = f"org/rev-{uuid.uuid4().hex[:6]}"
    old, _ = synthetic_repo(env, repo, 4 * MiB, "old")
    env.cache(namespace, "model", repo, store)
    first = env.ready(namespace, "model")
    assert first["status"]["resolvedRevision"] == old
    holder_pod(env, namespace, "before", "model")

    new, _ = synthetic_repo(env, repo, 4 * MiB, "new")
    env.hub.faults.bytes_per_second = MiB  # the new revision takes seconds to download
    try:
        env.k8s.patch_cache(namespace, "model", {"spec": {"source": {"huggingface": {"revision": new}}}})
        wait_for(lambda: ((env.k8s.get_cache(namespace, "model") or {}).get("status", {}).get("download") or {})
                 .get("state") == "Downloading", 120, describe="the new revision downloading",
                 diagnostics=env.diagnostics)
        holder_pod(env, namespace, "during", "model")
        still_downloading = (env.k8s.get_cache(namespace, "model") or {})["status"]["phase"]
    finally:
        env.hub.faults.bytes_per_second = None
    assert still_downloading in ("Downloading", "Verifying")
    assert pinned(env, namespace, "during")[0] == old  # the complete old revision, not a wait for the new one
    after = env.ready(namespace, "model")
    assert after["status"]["resolvedRevision"] == new and after["status"]["revisionPath"] == f"all/{new}"
    holder_pod(env, namespace, "after", "model")
    assert pinned(env, namespace, "after")[0] == new

    folder = env.root(store) / "hf" / repo / "all"
    old_download = pinned(env, namespace, "before")[1]
    assert revisions_in(folder) == sorted([old, new])
    # Unwanted now, but pods still use it: kept well past its TTL.
    wait_for(lambda: (_status(env, old_download).get("unusedSince") is None
             and _status(env, old_download).get("phase") == "Ready") or None, 10, describe="the old download")
    time.sleep(8)  # two TTLs and four resyncs: long enough for a wrong collection to have happened
    assert revisions_in(folder) == sorted([old, new])
    delete_pod(env, namespace, "before")
    assert revisions_in(folder) == sorted([old, new])
    delete_pod(env, namespace, "during")
    wait_for(lambda: revisions_in(folder) == [new], 120, describe="the old revision collected after its TTL",
             diagnostics=env.diagnostics)
    ns, name = old_download.split("/")
    wait_for(lambda: env.k8s.get_download(ns, name) is None, 30, describe="the old ModelDownload gone")
    reasons = [e.reason for e in env.k8s.events(ns) if e.involved_object.name == name]
    assert "RevisionRemoved" in reasons
    assert f'modelcache_revisions_removed_total{{reason="ttl",store="{store}"}} 1.0' in env.operator.metrics()
    delete_pod(env, namespace, "after")


def _status(env: Env, ref: str) -> dict[str, Any]:
    namespace, name = ref.split("/")
    return (env.k8s.get_download(namespace, name) or {}).get("status") or {}


def test_over_quota_the_least_recently_used_unused_revision_goes_never_one_in_use(env: Env) -> None:
    store = env.store("quota", quota="3Mi", retention={"policy": "Delete", "ttlSecondsAfterUnused": 3600})
    namespace = env.namespace("quota")
    tag = uuid.uuid4().hex[:6]
    repos = {key: f"org/{key}-{tag}" for key in "abcd"}
    sizes = {}
    for key in "abc":
        commit, _ = synthetic_repo(env, repos[key], MiB - 2, key)  # + config.json ({}) = 1 MiB per model
        sizes[key] = commit
        env.cache(namespace, key, repos[key], store)
    for key in "abc":
        env.ready(namespace, key)
    holder_pod(env, namespace, "uses-c", "c")
    ref = pinned_download_of(env, namespace, "uses-c")
    # c's cache goes first, but its pod still uses it; then a, then b: a is the least recently used unused one.
    for key in "cab":
        env.k8s.delete_cache(namespace, key)
        wait_for(lambda: env.k8s.get_cache(namespace, key) is None, 30,  # noqa: B023 - used at once
                 describe=f"cache {key} gone")
        if key != "c":
            wait_for(lambda: _unused_since(env, store, repos[key]), 30,  # noqa: B023 - used at once
                     describe=f"{key}'s download unused")
    assert _status(env, ref).get("unusedSince") is None  # in use by a pod: never unused
    synthetic_repo(env, repos["d"], MiB - 2, "d")
    env.cache(namespace, "d", repos["d"], store)
    env.ready(namespace, "d")
    folders = {key: env.root(store) / "hf" / repos[key] / "all" for key in "abcd"}
    wait_for(lambda: not revisions_in(folders["a"]), 120, describe="a evicted", diagnostics=env.diagnostics)
    assert revisions_in(folders["b"]) == [sizes["b"]]
    assert revisions_in(folders["c"]) == [sizes["c"]]
    assert len(revisions_in(folders["d"])) == 1
    # The folder goes first; the download's record, event and metric once its finalizer saw the cleanup finish.
    removed = f'modelcache_revisions_removed_total{{reason="quota",store="{store}"}} 1.0'
    wait_for(lambda: removed in env.operator.metrics(), 30, describe="the quota removal counted")
    assert [d["spec"]["source"]["huggingface"]["repo"] for d in env.k8s.downloads(store)
            if d["spec"]["source"]["huggingface"]["repo"] == repos["a"]] == []
    reasons = {e.reason for e in env.k8s.events(OPERATOR_NAMESPACE)}
    assert {"RevisionRemoved"} <= reasons
    delete_pod(env, namespace, "uses-c")


def pinned_download_of(env: Env, namespace: str, pod: str) -> str:
    annotations = env.k8s.core.read_namespaced_pod(pod, namespace).metadata.annotations
    return str(next(iter(json.loads(annotations[ANN_DOWNLOADS]).values())))


def _unused_since(env: Env, store: str, repo: str) -> str | None:
    for download in env.k8s.downloads(store):
        if download["spec"]["source"]["huggingface"]["repo"] == repo:
            return (download.get("status") or {}).get("unusedSince")
    return None

