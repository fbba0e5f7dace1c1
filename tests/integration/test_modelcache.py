"""ModelStore, ModelCache and ModelDownload reconciles on the real control plane: stores and their claims,
the per-namespace read-only claims, shared and private downloads, secrets, tenancy, revisions, retries,
deletion and restarts."""

from __future__ import annotations

import base64
import copy
import json
import posixpath
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from modelcache_devcluster.kwok import FAILING_NODE, FAILING_NODE_TAINT
from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.names import LABEL_STORE
from modelcache_operator.builders import layout, naming
from tests.support.downloader_role import REVISION_A, REVISION_B, downloader_reporter, publish
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import TEST_IMAGE, OperatorProcess

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = "hf_TopSecretTokenValue_" + uuid.uuid4().hex
REPO = "Qwen/Qwen3-0.6B"
NFS_SERVER = "10.0.0.2"
PUBLISHED_SIZE = 3 * 1024**3  # what tests.support.downloader_role.publish reports
# A node selector no node matches: the download Job's pod never schedules, so its Job stays active and the
# phase depends only on the downloader's reports (kwok would otherwise complete the pod within seconds).
NEVER_SCHEDULED = {"nodeSelector": {"kubernetes.io/hostname": "no-such-node"}}


# ----- stores -----

def namespace_selector(*namespaces: str) -> dict[str, Any]:
    if len(namespaces) == 1:
        return {"matchLabels": {"kubernetes.io/metadata.name": namespaces[0]}}
    return {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                  "values": list(namespaces)}]}


class Stores:
    """Creates ModelStores with unique names for one test and deletes them afterwards."""

    def __init__(self, k8s: Cluster):
        self.k8s = k8s
        self.names: list[str] = []

    def create(self, name: str, spec: dict[str, Any], ready: bool = True) -> str:
        self.names.append(name)
        self.k8s.create_store({"apiVersion": api.API_VERSION, "kind": api.STORE_KIND, "metadata": {"name": name},
                               "spec": spec})
        if ready:
            self.k8s.wait_store_ready(name, 60)
        return name

    def nfs(self, *namespaces: str, selector: dict[str, Any] | None = None, ready: bool = True,
            name: str | None = None, **spec: Any) -> str:
        """A static NFS store (a unique root) that the given namespaces may use."""
        name = name or f"nfs-{uuid.uuid4().hex[:6]}"
        return self.create(name, {
            "nfs": {"server": NFS_SERVER, "path": f"/exports/{name}", "mountOptions": ["nfsvers=4.1"]},
            "namespaceSelector": namespace_selector(*namespaces) if selector is None else selector,
            "capacity": "100Gi", **spec}, ready=ready)

    def delete(self, name: str) -> None:
        self.k8s.delete_store(name)
        wait_for(lambda: self.k8s.get_store(name) is None, 30, describe=f"ModelStore {name} deleted")

    def close(self) -> None:
        for name in self.names:
            self.delete(name)


@pytest.fixture
def stores(k8s: Cluster) -> Iterator[Stores]:
    created = Stores(k8s)
    yield created
    created.close()


# ----- caches -----

def cache_manifest(name: str, store: str | None, **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": {"huggingface": {"repo": REPO, "revision": "main"}}}
    if store is not None:
        spec["store"] = store
    spec.update(spec_overrides)
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec}


def with_token(cache: dict[str, Any], key: str = "HF_TOKEN") -> dict[str, Any]:
    cache["spec"]["source"]["huggingface"]["tokenSecretRef"] = {"name": "hf-token", "key": key}
    return cache


def hf_token_secret(k8s: Cluster, namespace: str, key: str = "HF_TOKEN", name: str = "hf-token") -> None:
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": {key: TOKEN}})


def cache_with_download(k8s: Cluster, namespace: str, name: str, operator: OperatorProcess,
                        not_named: str | None = None) -> dict[str, Any]:
    """The cache once its status names a ModelDownload (other than `not_named`) that exists."""
    def probe() -> dict[str, Any] | None:
        cache = k8s.get_cache(namespace, name)
        ref = ((cache or {}).get("status") or {}).get("downloadRef") or {}
        if not ref or ref["name"] == not_named or k8s.download_of(cache or {}) is None:
            return None
        return cache
    return wait_for(probe, 60, describe=f"ModelCache {namespace}/{name} with its ModelDownload",
                    diagnostics=operator.log_tail)


def job_of(k8s: Cluster, download: dict[str, Any], operator: OperatorProcess) -> Any:
    name = download["metadata"]["name"]
    return wait_for(lambda: next(iter(k8s.download_jobs(name)), None), 60, describe=f"the Job of {name}",
                    diagnostics=operator.log_tail)


def download_and_job(k8s: Cluster, namespace: str, name: str, operator: OperatorProcess,
                     not_named: str | None = None) -> tuple[dict[str, Any], Any]:
    download = k8s.download_of(cache_with_download(k8s, namespace, name, operator, not_named))
    assert download is not None
    return download, job_of(k8s, download, operator)


def reporter_for(k8s: Cluster, cluster: LocalCluster, download: dict[str, Any]) -> Any:
    return downloader_reporter(k8s, cluster, download["metadata"]["namespace"], download["metadata"]["name"])


def ready_cache(k8s: Cluster, cluster: LocalCluster, operator: OperatorProcess, namespace: str,
                cache: dict[str, Any]) -> dict[str, Any]:
    """Creates the cache, plays its download Job's reports and returns it Ready."""
    name = cache["metadata"]["name"]
    k8s.create_cache(namespace, copy.deepcopy(cache))
    download, job = download_and_job(k8s, namespace, name, operator)
    publish(reporter_for(k8s, cluster, download), job.metadata.name)
    return k8s.wait_phase(namespace, name, "Ready", diagnostics=operator.log_tail)


def wait_reason(k8s: Cluster, namespace: str, name: str, reason: str, operator: OperatorProcess,
                timeout: float = 60) -> dict[str, Any]:
    """The cache once its Ready condition has `reason`."""
    def probe() -> dict[str, Any] | None:
        cache = k8s.get_cache(namespace, name)
        conditions = ((cache or {}).get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c["type"] == "Ready"), None)
        return cache if ready and ready["reason"] == reason else None
    return wait_for(probe, timeout, describe=f"ModelCache {namespace}/{name} Ready reason {reason}",
                    diagnostics=lambda: f"cache: {k8s.get_cache(namespace, name)}\n{operator.log_tail()}")


def _pvc(k8s: Cluster, namespace: str, name: str) -> Any:
    items = k8s.core.list_namespaced_persistent_volume_claim(namespace, field_selector=f"metadata.name={name}").items
    return items[0] if items else None


def _bound_pvc(k8s: Cluster, namespace: str, name: str) -> Any:
    pvc = _pvc(k8s, namespace, name)
    return pvc if pvc is not None and pvc.status.phase == "Bound" else None


def wait_bound(k8s: Cluster, namespace: str, name: str) -> Any:
    return wait_for(lambda: _bound_pvc(k8s, namespace, name), 60, describe=f"PVC {namespace}/{name} Bound")


def _pv(k8s: Cluster, name: str) -> Any:
    items = k8s.core.list_persistent_volume(field_selector=f"metadata.name={name}").items
    return items[0] if items else None


def event_reasons(k8s: Cluster, namespace: str, name: str) -> set[str]:
    return {e.reason for e in k8s.events(namespace) if e.involved_object.name == name}


def env_of(job: Any) -> dict[str, Any]:
    return {e.name: e for e in job.spec.template.spec.containers[0].env}


def cache_mount(job: Any) -> Any:
    return next(m for m in job.spec.template.spec.containers[0].volume_mounts if m.name == "cache")


def claim_of(job: Any) -> str:
    volume = next(v for v in job.spec.template.spec.volumes if v.name == "cache")
    return str(volume.persistent_volume_claim.claim_name)


def filter_of(cache: dict[str, Any]) -> str:
    """`all`, or `f-<hash>` of the cache's file patterns: the folder of its download inside the model's."""
    return layout.filter_dir(layout.source_key(api.ModelCacheSpec.model_validate(cache["spec"]).source).fields)


# ----- the examples -----

def example_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def example_caches(filename: str, namespace: str) -> list[dict[str, Any]]:
    caches = [d for d in example_docs(EXAMPLES / filename) if d["kind"] == api.KIND]
    for cache in caches:
        cache["metadata"]["namespace"] = namespace
    return caches


def example_stores() -> dict[str, dict[str, Any]]:
    stores = [d for path in sorted((EXAMPLES / "stores").glob("*.yaml")) for d in example_docs(path)
              if d["kind"] == api.STORE_KIND]
    return {s["metadata"]["name"]: s for s in stores}


def example_store_for(cache: dict[str, Any]) -> dict[str, Any]:
    stores = example_stores()
    name = cache["spec"].get("store")
    if name is None:
        defaults = [s for s in stores.values() if s["spec"].get("default")]
        assert len(defaults) == 1, f"examples/stores/ must mark exactly one default store: {sorted(stores)}"
        return defaults[0]
    assert name in stores, f"examples/stores/ has no ModelStore {name}: {sorted(stores)}"
    return stores[name]


def bind_dynamic_claim(k8s: Cluster, namespace: str, pvc_name: str, storage_class: str, size: str) -> None:
    """Plays the external CSI provisioner of a StorageClass: a matching PV, pre-bound to the claim."""
    k8s.core.create_persistent_volume({
        "metadata": {"name": f"pvc-{uuid.uuid4().hex[:12]}"},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": storage_class,
                 "claimRef": {"namespace": namespace, "name": pvc_name},
                 "csi": {"driver": "filestore.csi.storage.gke.io", "volumeHandle": uuid.uuid4().hex}},
    })


BACKEND_EXAMPLES = {
    "ossfs2": "ossfs2-vllm-deepseek-r1.yaml",
    "nfs": "nfs-sglang.yaml",
    "efs": "efs.yaml",
    "storageClass": "storageclass.yaml",
    "modelscope": "modelscope-mirror.yaml",
}


class ExampleStores:
    """Creates the examples' stores (named as in examples/stores/) for one test, with the namespaceSelector
    patched to the test's namespace, and the hub credential Secrets they name."""

    def __init__(self, k8s: Cluster):
        self.k8s = k8s
        self.stores: list[str] = []
        self.secrets: list[str] = []

    def create(self, store: dict[str, Any], namespace: str) -> None:
        store = copy.deepcopy(store)
        store["spec"]["namespaceSelector"] = namespace_selector(namespace)
        for ref in (store["spec"].get("hubCredentials") or {}).values():
            # The admin's token for shared downloads, in the operator's namespace.
            self.k8s.core.create_namespaced_secret(OPERATOR_NAMESPACE, {
                "metadata": {"name": ref["name"]}, "stringData": {ref.get("key", "token"): TOKEN}})
            self.secrets.append(ref["name"])
        self.stores.append(store["metadata"]["name"])
        self.k8s.create_store(store)

    def close(self) -> None:
        """Waits for the stores' writable claims to go too: the next test may create a store of the same name."""
        for secret in self.secrets:
            self.k8s.core.delete_namespaced_secret(secret, OPERATOR_NAMESPACE)
        for name in self.stores:
            self._delete(name)

    def _delete(self, name: str) -> None:
        self.k8s.delete_store(name)
        wait_for(lambda: self.k8s.get_store(name) is None, 30, describe=f"ModelStore {name} deleted")
        wait_for(lambda: _pvc(self.k8s, OPERATOR_NAMESPACE, naming.store_claim_name(name)) is None
                 and _pv(self.k8s, naming.store_pv_name(name)) is None,
                 60, describe=f"the writable claim of ModelStore {name} garbage-collected")


@pytest.fixture
def example_stores_(k8s: Cluster) -> Iterator[ExampleStores]:
    created = ExampleStores(k8s)
    yield created
    created.close()


@pytest.mark.parametrize("backend", sorted(BACKEND_EXAMPLES))
def test_example_reconciles_to_ready(backend: str, k8s: Cluster, namespace: str, operator: OperatorProcess,
                                     local_cluster: LocalCluster, example_stores_: ExampleStores) -> None:
    cache = example_caches(BACKEND_EXAMPLES[backend], namespace)[0]
    name = cache["metadata"]["name"]
    store = example_store_for(cache)
    store_name, store_spec = store["metadata"]["name"], store["spec"]
    store_backend = next(b for b in api.STORAGE_BACKENDS if b in store_spec)
    example_stores_.create(store, namespace)
    ready_store = k8s.wait_store_ready(store_name, 60)
    assert ready_store["status"]["backend"] == store_backend
    if "tokenSecretRef" in json.dumps(cache):
        hf_token_secret(k8s, namespace)
    k8s.create_cache(namespace, cache)
    source = cache["spec"]["source"]
    hub = "huggingface" if "huggingface" in source else "modelscope"
    repo = source[hub].get("repo") or source[hub]["model"]
    private = "storageClass" in store_spec or "tokenSecretRef" in source[hub]
    model_dir = f"{'hf' if hub == 'huggingface' else 'ms'}/{repo}"
    filter_dir = filter_of(cache)

    if "storageClass" in store_spec:
        pvc_name = naming.store_claim_name(store_name)
        claim = wait_for(lambda: _pvc(k8s, namespace, pvc_name), 60, describe="the namespace's dynamic claim",
                         diagnostics=operator.log_tail)
        assert claim.spec.resources.requests == {"storage": ready_store["spec"]["capacity"]}
        bind_dynamic_claim(k8s, namespace, pvc_name, store_spec["storageClass"]["name"],
                           ready_store["spec"]["capacity"])
        pvc = wait_bound(k8s, namespace, pvc_name)
        assert pvc.spec.access_modes == ["ReadWriteMany"]
        assert pvc.spec.storage_class_name == store_spec["storageClass"]["name"]
        assert pvc.metadata.owner_references[0].kind == api.STORE_KIND
    else:
        _assert_store_writer_claim(k8s, store_name, store_spec, store_backend)
        pvc_name = naming.pvc_name(name)
        pvc = wait_bound(k8s, namespace, pvc_name)
        assert pvc.spec.access_modes == ["ReadOnlyMany"]
        assert pvc.metadata.owner_references[0].kind == api.KIND
        pv = k8s.core.read_persistent_volume(pvc.spec.volume_name)
        assert pv.metadata.name == naming.pv_name(namespace, name)
        assert pv.spec.access_modes == ["ReadOnlyMany"]
        assert pv.spec.claim_ref.namespace == namespace and pv.spec.claim_ref.name == pvc_name
        assert pv.spec.persistent_volume_reclaim_policy == "Retain"
        assert not pv.spec.storage_class_name  # "" (static binding) is omitted by the API
        relative = f"private/{namespace}/{model_dir}" if private else model_dir
        _assert_pv_source(store_backend, pv, store_spec, relative, read_only=True)

    download, job = download_and_job(k8s, namespace, name, operator)
    ref = (k8s.get_cache(namespace, name) or {})["status"]["downloadRef"]
    assert ref == {"namespace": namespace if private else OPERATOR_NAMESPACE, "name": download["metadata"]["name"],
                   "shared": not private, "requestedBy": f"{namespace}/{name}"}
    assert download["spec"]["store"] == store_name
    assert download["spec"]["folder"] == (filter_dir if private and "storageClass" not in store_spec
                                          else f"{model_dir}/{filter_dir}")
    assert job.metadata.namespace == download["metadata"]["namespace"]
    assert job.metadata.name == naming.download_job_name(download["metadata"]["name"])
    assert claim_of(job) == download["spec"]["claimName"]
    assert cache_mount(job).sub_path == download["spec"]["folder"]
    container = job.spec.template.spec.containers[0]
    env = env_of(job)
    assert env["MC_HUB"].value == hub
    assert env["MC_REPO"].value == repo
    assert env["MC_DOWNLOAD_NAME"].value == download["metadata"]["name"]
    assert env["MC_DOWNLOAD_NAMESPACE"].value == download["metadata"]["namespace"]
    assert env["MC_JOB_NAME"].value == job.metadata.name
    if "endpoint" in source[hub]:
        assert env["MC_ENDPOINT"].value == source[hub]["endpoint"]
    # The cache's own token (a private download), else the store's credentials for the hub (a shared one).
    token = source[hub].get("tokenSecretRef") or (store_spec.get("hubCredentials") or {}).get(hub)
    if token:
        assert env["MC_HUB_TOKEN"].value is None
        reference = env["MC_HUB_TOKEN"].value_from.secret_key_ref
        assert (reference.name, reference.key) == (token["name"], token.get("key", "token"))
    else:
        assert "MC_HUB_TOKEN" not in env
    assert container.image == TEST_IMAGE
    assert not any("gpu" in k for k in (container.resources.limits or {}) | (container.resources.requests or {}))
    assert job.spec.template.spec.service_account_name == naming.downloader_identity_name(download["metadata"]["name"])
    assert job.spec.pod_failure_policy.rules[0].action == "FailJob"

    publish(reporter_for(k8s, local_cluster, download), job.metadata.name)
    ready = k8s.wait_phase(namespace, name, "Ready", diagnostics=operator.log_tail)
    status = ready["status"]
    assert status["store"] == store_name
    assert status["resolvedRevision"] == REVISION_A
    serving = f"{model_dir}/{filter_dir}/{REVISION_A}" if "storageClass" in store_spec else f"{filter_dir}/{REVISION_A}"
    assert status["revisionPath"] == serving
    assert status["pvcName"] == pvc_name
    assert status["sizeBytes"] == PUBLISHED_SIZE and status["size"] == "3.0GiB" and status["fileCount"] == 7
    assert status["format"] == "safetensors"
    assert status["observedGeneration"] == ready["metadata"]["generation"]
    assert k8s.condition(ready, "Ready")["status"] == "True"
    assert k8s.condition(ready, "StorageReady")["reason"] == "PVCBound"
    columns = local_cluster.kubectl("get", "mc", name, "-n", namespace, "--no-headers")
    assert "Ready" in columns and REVISION_A in columns and "100%" in columns and "3.0GiB" in columns
    assert store_name in columns


def _assert_store_writer_claim(k8s: Cluster, store: str, spec: dict[str, Any], backend: str) -> None:
    """A static store's writable PV on its root, pre-bound to its claim in the operator's namespace."""
    pvc = wait_bound(k8s, OPERATOR_NAMESPACE, naming.store_claim_name(store))
    assert pvc.spec.access_modes == ["ReadWriteMany"]
    assert pvc.metadata.owner_references[0].kind == api.STORE_KIND
    assert pvc.metadata.owner_references[0].name == store
    pv = k8s.core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.metadata.name == naming.store_pv_name(store)
    assert pv.spec.access_modes == ["ReadWriteMany"]
    assert pv.spec.persistent_volume_reclaim_policy == "Retain"
    assert pv.spec.claim_ref.namespace == OPERATOR_NAMESPACE
    _assert_pv_source(backend, pv, spec, "", read_only=False)


def _assert_pv_source(backend: str, pv: Any, store: dict[str, Any], relative: str, read_only: bool) -> None:
    """The PV points at `relative` below the store's root; serving PVs are read-only at the volume level."""
    def below(root: str) -> str:
        return posixpath.normpath(posixpath.join(root, relative)) if relative else root

    if backend == "ossfs2":
        oss = store["ossfs2"]
        assert pv.spec.csi.driver == "ossplugin.csi.alibabacloud.com"
        assert pv.spec.csi.volume_handle == pv.metadata.name
        assert bool(pv.spec.csi.read_only) is read_only
        attributes = {"fuseType": "ossfs2", "bucket": oss["bucket"], "path": below(oss.get("path", "/")),
                      "url": oss["url"]}
        if oss.get("otherOpts"):
            attributes["otherOpts"] = oss["otherOpts"]
        if oss.get("authType", "rrsa") == "rrsa":
            attributes |= {"authType": "rrsa", "roleName": oss.get("roleName", "")}
        else:
            assert pv.spec.csi.node_publish_secret_ref.name == oss["secretRef"]["name"]
            assert pv.spec.csi.node_publish_secret_ref.namespace == OPERATOR_NAMESPACE
        assert pv.spec.csi.volume_attributes == attributes
    elif backend == "nfs":
        nfs = store["nfs"]
        assert pv.spec.nfs.server == nfs["server"] and pv.spec.nfs.path == below(nfs["path"])
        assert bool(pv.spec.nfs.read_only) is read_only
        if nfs.get("mountOptions"):
            assert pv.spec.mount_options == nfs["mountOptions"]
    elif backend == "efs":
        efs = store["efs"]
        assert pv.spec.csi.driver == "efs.csi.aws.com"
        handle = f"{efs['fileSystemId']}:{below(efs.get('path', '/'))}"
        assert pv.spec.csi.volume_handle == handle + (f":{efs['accessPointId']}" if efs.get("accessPointId") else "")
        assert bool(pv.spec.csi.read_only) is read_only
    else:
        raise AssertionError(f"no PV expectations for {backend}")


# ----- stores, claims and shared downloads -----

def test_static_store_and_cache_children(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                         local_cluster: LocalCluster, stores: Stores) -> None:
    """An NFS store's writable claim, a cache's read-only PV on its model folder, and the shared
    ModelDownload (with its own identity and Job) that fills the cache's filter folder."""
    store = stores.nfs(namespace)
    ready_store = k8s.get_store(store)
    assert ready_store is not None
    assert ready_store["status"]["backend"] == "nfs"
    assert k8s.condition(ready_store, "Ready")["status"] == "True"
    store_spec = ready_store["spec"]
    _assert_store_writer_claim(k8s, store, store_spec, "nfs")

    patterns = {"allowPatterns": ["*.safetensors", "*.json"], "ignorePatterns": ["original/*"]}
    cache = cache_manifest("qwen", store)
    cache["spec"]["source"]["huggingface"] |= patterns
    k8s.create_cache(namespace, cache)
    filter_dir = filter_of(cache)
    assert filter_dir == "f-" + naming.short_hash(sorted(patterns["allowPatterns"]),
                                                  sorted(patterns["ignorePatterns"]))

    pvc = wait_bound(k8s, namespace, naming.pvc_name("qwen"))
    assert pvc.spec.access_modes == ["ReadOnlyMany"]
    assert pvc.spec.volume_name == naming.pv_name(namespace, "qwen")
    assert pvc.metadata.owner_references[0].kind == api.KIND and pvc.metadata.owner_references[0].name == "qwen"
    pv = k8s.core.read_persistent_volume(pvc.spec.volume_name)
    _assert_pv_source("nfs", pv, store_spec, f"hf/{REPO}", read_only=True)
    assert pv.spec.access_modes == ["ReadOnlyMany"]
    assert pv.spec.capacity == {"storage": "100Gi"}

    download, job = download_and_job(k8s, namespace, "qwen", operator)
    download_name = download["metadata"]["name"]
    assert download["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert download["metadata"]["ownerReferences"][0]["kind"] == api.STORE_KIND
    assert download["spec"]["folder"] == f"hf/{REPO}/{filter_dir}"
    assert download["spec"]["claimName"] == naming.store_claim_name(store)
    assert download["spec"]["requestedBy"] == f"{namespace}/qwen"
    assert job.metadata.namespace == OPERATOR_NAMESPACE
    assert job.metadata.name == naming.download_job_name(download_name)
    assert job.metadata.labels["modelcache.dev/download"] == download_name
    assert job.metadata.owner_references[0].kind == api.DOWNLOAD_KIND
    assert claim_of(job) == naming.store_claim_name(store)
    assert cache_mount(job).sub_path == f"hf/{REPO}/{filter_dir}"
    env = env_of(job)
    assert json.loads(env["MC_ALLOW_PATTERNS"].value) == patterns["allowPatterns"]
    assert json.loads(env["MC_IGNORE_PATTERNS"].value) == patterns["ignorePatterns"]
    assert "MC_HUB_TOKEN" not in env

    identity = naming.downloader_identity_name(download_name)
    assert job.spec.template.spec.service_account_name == identity
    role = k8s.rbac.read_namespaced_role(identity, OPERATOR_NAMESPACE)
    assert [(r.resources, r.resource_names, sorted(r.verbs)) for r in role.rules] == [
        ([f"{api.DOWNLOAD_PLURAL}/status"], [download_name], ["get", "patch"])]
    binding = k8s.rbac.read_namespaced_role_binding(identity, OPERATOR_NAMESPACE)
    assert binding.role_ref.name == identity
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
        ("ServiceAccount", identity, OPERATOR_NAMESPACE)]

    publish(reporter_for(k8s, local_cluster, download), job.metadata.name)
    ready = k8s.wait_phase(namespace, "qwen", "Ready", diagnostics=operator.log_tail)
    status = ready["status"]
    assert status["revisionPath"] == f"{filter_dir}/{REVISION_A}"
    assert status["model"] == f"hf:{REPO}"
    assert status["pvName"] == naming.pv_name(namespace, "qwen")
    assert status["download"]["state"] == "Published" and status["download"]["jobName"] == job.metadata.name
    assert status["progress"]["percent"] == "100%"
    assert "pendingRevisionPath" not in status
    published = k8s.get_download(OPERATOR_NAMESPACE, download_name)
    assert published is not None
    assert published["status"]["phase"] == "Ready"
    assert published["status"]["resolvedRevision"] == REVISION_A
    assert published["status"]["sizeBytes"] == PUBLISHED_SIZE
    counted = wait_for(lambda: (s := k8s.get_store(store)) and s["status"].get("revisionCount") == 1 and s, 30,
                       describe="the store's status counting the published revision")
    assert counted["status"]["usedBytes"] == PUBLISHED_SIZE and counted["status"]["used"] == "3.0GiB"


def test_same_model_in_two_namespaces_shares_one_download(k8s: Cluster, operator: OperatorProcess,
                                                           local_cluster: LocalCluster, stores: Stores) -> None:
    """Each namespace gets its own PV (same cache name, distinct names); one ModelDownload and one Job fill
    the shared folder for both. Another file filter is another download."""
    namespaces = [f"t-twin-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    try:
        for ns in namespaces:
            k8s.core.create_namespace({"metadata": {"name": ns}})
        store = stores.nfs(*namespaces)
        first = namespaces[0]
        k8s.create_cache(first, cache_manifest("shared-name", store))
        cache_with_download(k8s, first, "shared-name", operator)
        k8s.create_cache(namespaces[1], cache_manifest("shared-name", store))
        pvs = [wait_bound(k8s, ns, naming.pvc_name("shared-name")).spec.volume_name for ns in namespaces]
        assert pvs[0] != pvs[1]
        assert pvs == [naming.pv_name(ns, "shared-name") for ns in namespaces]
        refs = [cache_with_download(k8s, ns, "shared-name", operator)["status"]["downloadRef"] for ns in namespaces]
        # The second cache names the first one's request once the operator's watch has that ModelDownload.
        refs[1] = wait_for(lambda: (c := k8s.get_cache(namespaces[1], "shared-name")) and
                           c["status"]["downloadRef"] == refs[0] and c["status"]["downloadRef"], 30,
                           describe="the second cache sharing the first one's download",
                           diagnostics=lambda: f"{refs}\n{operator.log_tail()}")
        assert refs[0]["shared"] is True and refs[0]["namespace"] == OPERATOR_NAMESPACE
        assert refs[0]["requestedBy"] == f"{first}/shared-name"
        assert [d["metadata"]["name"] for d in k8s.downloads(store)] == [refs[0]["name"]]
        download = k8s.get_download(OPERATOR_NAMESPACE, refs[0]["name"])
        assert download is not None
        job = job_of(k8s, download, operator)
        publish(reporter_for(k8s, local_cluster, download), job.metadata.name)
        for ns in namespaces:
            ready = k8s.wait_phase(ns, "shared-name", "Ready", diagnostics=operator.log_tail)
            assert ready["status"]["revisionPath"] == f"all/{REVISION_A}"
        assert len(k8s.download_jobs(refs[0]["name"])) == 1

        filtered = cache_manifest("weights-only", store)
        filtered["spec"]["source"]["huggingface"]["allowPatterns"] = ["*.safetensors"]
        k8s.create_cache(first, filtered)
        other = k8s.download_of(cache_with_download(k8s, first, "weights-only", operator))
        assert other is not None and other["metadata"]["name"] != refs[0]["name"]
        assert other["spec"]["folder"] == f"hf/{REPO}/{filter_of(filtered)}"
        assert len(k8s.downloads(store)) == 2
    finally:
        for ns in namespaces:
            k8s.core.delete_namespace(ns)


# ----- secrets -----

def test_private_download_gets_its_own_claim_and_the_token_by_reference(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster,
        stores: Stores) -> None:
    """A cache with its own token gets a download private to its namespace, on a writable claim limited to
    that namespace's model folder. The operator never reads the Secret: a missing one is the pod's
    CreateContainerConfigError on a real kubelet (tests/integration/test_secrets_real_node.py)."""
    store = stores.nfs(namespace)
    k8s.create_cache(namespace, with_token(cache_manifest("needs-token", store)))
    cache = cache_with_download(k8s, namespace, "needs-token", operator)
    ref = cache["status"]["downloadRef"]
    assert ref["namespace"] == namespace and ref["shared"] is False
    download = k8s.get_download(namespace, ref["name"])
    assert download is not None
    job = job_of(k8s, download, operator)
    assert job.metadata.namespace == namespace
    assert download["spec"]["folder"] == "all" and cache_mount(job).sub_path == "all"
    writer = wait_bound(k8s, namespace, download["spec"]["claimName"])
    assert writer.spec.access_modes == ["ReadWriteMany"]
    assert writer.spec.volume_name != naming.store_pv_name(store)
    store_spec = (k8s.get_store(store) or {})["spec"]
    private_dir = f"private/{namespace}/hf/{REPO}"
    _assert_pv_source("nfs", k8s.core.read_persistent_volume(writer.spec.volume_name), store_spec, private_dir,
                      read_only=False)
    serving = k8s.core.read_persistent_volume(naming.pv_name(namespace, "needs-token"))
    _assert_pv_source("nfs", serving, store_spec, private_dir, read_only=True)
    token = env_of(job)["MC_HUB_TOKEN"]
    assert token.value is None and token.value_from.secret_key_ref.name == "hf-token"
    publish(reporter_for(k8s, local_cluster, download), job.metadata.name)
    ready_cache_ = k8s.wait_phase(namespace, "needs-token", "Ready", diagnostics=operator.log_tail)
    assert ready_cache_["status"]["revisionPath"] == f"all/{REVISION_A}"


def test_shared_download_takes_the_stores_credentials_by_reference(k8s: Cluster, namespace: str,
                                                                  operator: OperatorProcess,
                                                                  stores: Stores) -> None:
    """A shared download uses the store's hub credentials, a Secret in the operator's namespace that the
    operator itself never reads."""
    secret = f"hub-{uuid.uuid4().hex[:6]}"
    store = stores.nfs(namespace, hubCredentials={"huggingface": {"name": secret, "key": "HF_TOKEN"}})
    k8s.create_cache(namespace, cache_manifest("shared-token", store))
    cache = cache_with_download(k8s, namespace, "shared-token", operator)
    ref = cache["status"]["downloadRef"]
    assert ref["namespace"] == OPERATOR_NAMESPACE and ref["shared"] is True
    download = k8s.get_download(OPERATOR_NAMESPACE, ref["name"])
    assert download is not None
    token = env_of(job_of(k8s, download, operator))["MC_HUB_TOKEN"]
    assert token.value is None
    assert (token.value_from.secret_key_ref.name, token.value_from.secret_key_ref.key) == (secret, "HF_TOKEN")


# ----- tenancy -----

def _assert_blocked(cache: dict[str, Any], reason: str, k8s: Cluster) -> None:
    assert cache["status"]["phase"] == "Pending"
    for kind in ("Ready", "Downloaded", "StorageReady"):
        assert k8s.condition(cache, kind)["reason"] == reason, kind
    assert "downloadRef" not in cache["status"]


def _assert_no_download_comes(k8s: Cluster, store: str, operator: OperatorProcess) -> None:
    time.sleep(operator.resync_seconds * 2)
    assert k8s.downloads(store) == []
    assert [j.metadata.name for j in k8s.download_jobs() if j.metadata.labels.get(LABEL_STORE) == store] == []


def test_deleted_store_leaves_the_cache_pending_store_not_found(k8s: Cluster, namespace: str,
                                                               operator: OperatorProcess,
                                                               local_cluster: LocalCluster,
                                                               stores: Stores) -> None:
    store = stores.nfs(namespace)
    ready_cache(k8s, local_cluster, operator, namespace, cache_manifest("orphan", store))
    stores.delete(store)
    pending = wait_reason(k8s, namespace, "orphan", "StoreNotFound", operator)
    _assert_blocked(pending, "StoreNotFound", k8s)
    assert f'ModelStore "{store}"' in k8s.condition(pending, "Ready")["message"]
    assert pending["status"]["store"] == store
    # The store's ModelDownloads went with it (owner references), and the reconciler creates none.
    wait_for(lambda: k8s.downloads(store) == [], 60, describe=f"the ModelDownloads of {store} collected")
    _assert_no_download_comes(k8s, store, operator)


def test_unselected_namespace_is_store_not_allowed_until_labelled(k8s: Cluster, namespace: str,
                                                                 operator: OperatorProcess,
                                                                 local_cluster: LocalCluster,
                                                                 stores: Stores) -> None:
    team = uuid.uuid4().hex[:8]
    k8s.core.patch_namespace(namespace, {"metadata": {"labels": {"modelcache.dev/team": team}}})
    store = stores.nfs(selector={"matchLabels": {"modelcache.dev/team": team}})
    ready_cache(k8s, local_cluster, operator, namespace, cache_manifest("team-model", store))

    k8s.core.patch_namespace(namespace, {"metadata": {"labels": {"modelcache.dev/team": None}}})
    refused = wait_reason(k8s, namespace, "team-model", "StoreNotAllowed", operator)
    _assert_blocked(refused, "StoreNotAllowed", k8s)
    message = k8s.condition(refused, "Ready")["message"]
    assert f'namespace "{namespace}"' in message and store in message

    k8s.core.patch_namespace(namespace, {"metadata": {"labels": {"modelcache.dev/team": team}}})
    again = k8s.wait_phase(namespace, "team-model", "Ready", diagnostics=operator.log_tail)
    assert again["status"]["resolvedRevision"] == REVISION_A
    assert len(k8s.downloads(store)) == 1


@pytest.fixture
def host_path_allowed(operator: OperatorProcess) -> Iterator[Callable[[bool], None]]:
    """Restarts the session operator with hostPath stores allowed or not (the chart value
    stores.allowHostPath), and always leaves it as it was: disallowed."""
    def restart(allowed: bool) -> None:
        operator.stop()
        operator.allow_host_path = allowed
        operator.start()
    yield restart
    if operator.allow_host_path:
        restart(False)


def test_hostpath_store_is_invalid_once_disabled(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                 stores: Stores, host_path_allowed: Callable[[bool], None]) -> None:
    """A hostPath store and its cache from while the chart allowed them: after an upgrade that disallows
    hostPath stores, the store is Invalid and the cache gets nothing more on it."""
    host_path_allowed(True)
    name = stores.create(f"host-{uuid.uuid4().hex[:6]}", {
        "hostPath": {"path": f"/var/lib/modelcache-{uuid.uuid4().hex[:6]}"},
        "namespaceSelector": namespace_selector(namespace)})
    k8s.create_cache(namespace, cache_manifest("on-host", name))
    download = k8s.download_of(cache_with_download(k8s, namespace, "on-host", operator))
    assert download is not None
    job = job_of(k8s, download, operator)

    host_path_allowed(False)

    def invalid() -> dict[str, Any] | None:
        store = k8s.get_store(name)
        return store if store and (store.get("status") or {}).get("phase") == "Invalid" else None
    store = wait_for(invalid, 30, describe=f"ModelStore {name} Invalid", diagnostics=operator.log_tail)
    assert store["status"]["backend"] == "hostPath"
    ready = k8s.condition(store, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "HostPathDisabled"

    blocked = wait_reason(k8s, namespace, "on-host", "HostPathDisabled", operator)
    _assert_blocked(blocked, "HostPathDisabled", k8s)
    time.sleep(operator.resync_seconds * 2)
    assert [d["metadata"]["uid"] for d in k8s.downloads(name)] == [download["metadata"]["uid"]]
    assert [j.metadata.uid for j in k8s.download_jobs() if j.metadata.labels.get(LABEL_STORE) == name] == [
        job.metadata.uid]


def test_default_store_is_used_and_kept(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                        stores: Stores) -> None:
    """A cache without spec.store gets the default store and keeps it when the default moves; one with no
    store recorded and no default store gets NoDefaultStore."""
    default = stores.nfs(namespace, name=f"default-{uuid.uuid4().hex[:6]}", default=True)
    k8s.create_cache(namespace, cache_manifest("defaulted", None))
    cache = cache_with_download(k8s, namespace, "defaulted", operator)
    assert cache["status"]["store"] == default
    download = k8s.download_of(cache)
    assert download is not None and download["spec"]["store"] == default

    stores.delete(default)
    wait_reason(k8s, namespace, "defaulted", "StoreNotFound", operator)
    successor = stores.nfs(namespace, name=f"default-{uuid.uuid4().hex[:6]}", default=True)
    time.sleep(operator.resync_seconds * 2)
    kept = wait_reason(k8s, namespace, "defaulted", "StoreNotFound", operator)
    assert kept["status"]["store"] == default
    message = k8s.condition(kept, "Ready")["message"]
    assert f'ModelStore "{default}"' in message and "does not exist" in message
    assert k8s.downloads(successor) == []

    # A cache whose status was lost (restored from a backup, say) while no store is marked default.
    stores.delete(successor)
    k8s.custom.patch_namespaced_custom_object_status(api.GROUP, api.VERSION, namespace, api.PLURAL, "defaulted",
                                                     {"status": {"store": None}})
    lost = wait_reason(k8s, namespace, "defaulted", "NoDefaultStore", operator)
    _assert_blocked(lost, "NoDefaultStore", k8s)
    assert "store" not in lost["status"]


# ----- revisions, failures, retries -----

def test_revision_change_downloads_beside_the_old_one(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                     local_cluster: LocalCluster, stores: Stores) -> None:
    store = stores.nfs(namespace)
    first = ready_cache(k8s, local_cluster, operator, namespace,
                        cache_manifest("rolling", store, download=NEVER_SCHEDULED))
    old = first["status"]["downloadRef"]["name"]
    assert first["status"]["revisionPath"] == f"all/{REVISION_A}"

    k8s.patch_cache(namespace, "rolling", {"spec": {"source": {"huggingface": {"revision": "v2.0"}}}})
    download, job = download_and_job(k8s, namespace, "rolling", operator, not_named=old)
    assert download["spec"]["source"]["huggingface"]["revision"] == "v2.0"
    assert download["spec"]["folder"] == f"hf/{REPO}/all"  # the same folder, another commit inside it
    reporter = reporter_for(k8s, local_cluster, download)
    reporter.send(api.DownloadReport(jobName=job.metadata.name, state="Resolving", requestedRevision="v2.0"),
                  force=True)
    reporter.send(api.DownloadReport(jobName=job.metadata.name, state="Downloading", resolvedRevision=REVISION_B,
                                     bytesDone=1024**3, bytesTotal=4 * 1024**3, filesDone=1, filesTotal=4),
                  force=True)

    def downloading_b() -> dict[str, Any] | None:
        cache = k8s.get_cache(namespace, "rolling")
        status = (cache or {}).get("status") or {}
        return cache if status.get("pendingRevisionPath") == f"all/{REVISION_B}" else None
    rolling = wait_for(downloading_b, 30, describe="the new revision downloading", diagnostics=operator.log_tail)
    status = rolling["status"]
    # Serving pods stay pinned to the old, complete revision until the new one is published.
    assert status["phase"] == "Downloading"
    assert status["resolvedRevision"] == REVISION_A and status["revisionPath"] == f"all/{REVISION_A}"
    assert status["sizeBytes"] == PUBLISHED_SIZE
    assert status["download"]["jobName"] == job.metadata.name and status["download"]["state"] == "Downloading"
    assert status["progress"]["percent"] == "25%"
    assert status["observedGeneration"] == 2
    assert f"new pods get the published revision {REVISION_A}" in k8s.condition(rolling, "Ready")["message"]
    previous = k8s.get_download(OPERATOR_NAMESPACE, old)
    assert previous is not None and previous["status"]["phase"] == "Ready"

    publish(reporter, job.metadata.name, revision=REVISION_B, size=4 * 1024**3, files=4)
    ready = k8s.wait_phase(namespace, "rolling", "Ready", diagnostics=operator.log_tail)
    assert ready["status"]["resolvedRevision"] == REVISION_B
    assert ready["status"]["revisionPath"] == f"all/{REVISION_B}"
    assert ready["status"]["sizeBytes"] == 4 * 1024**3 and ready["status"]["fileCount"] == 4
    assert "pendingRevisionPath" not in ready["status"]


ON_FAILING_NODE = {"nodeSelector": {"kubernetes.io/hostname": FAILING_NODE},
                   "tolerations": [{"key": FAILING_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}


def test_failed_download_reports_reason_and_retry_recovers(k8s: Cluster, namespace: str,
                                                           operator: OperatorProcess, local_cluster: LocalCluster,
                                                           stores: Stores) -> None:
    """The Job's pod exits 11 (NotFound) with a termination message; podFailurePolicy fails the Job at once.
    The retry annotation makes a new download (here with the scheduling fixed too)."""
    store = stores.nfs(namespace)
    k8s.create_cache(namespace, cache_manifest("flaky", store, download=ON_FAILING_NODE))
    download, job = download_and_job(k8s, namespace, "flaky", operator)
    failed = k8s.wait_phase(namespace, "flaky", "Failed", diagnostics=operator.log_tail)
    condition = k8s.condition(failed, "Ready")
    assert condition["reason"] == "NotFound" and "kwok failing node" in condition["message"]
    failed_download = k8s.get_download(OPERATOR_NAMESPACE, download["metadata"]["name"])
    assert failed_download is not None and failed_download["status"]["phase"] == "Failed"
    assert k8s.condition(failed_download, "Ready")["reason"] == "NotFound"
    assert len(k8s.download_jobs(download["metadata"]["name"])) == 1, "a permanent failure must not spawn retries"
    assert k8s.batch.read_namespaced_job(job.metadata.name, OPERATOR_NAMESPACE).status.failed == 1
    wait_for(lambda: "NotFound" in event_reasons(k8s, namespace, "flaky"), 20, describe="a NotFound event")

    k8s.patch_cache(namespace, "flaky", {"metadata": {"annotations": {"modelcache.dev/retry": "1"}},
                                         "spec": {"download": {"nodeSelector": None, "tolerations": None}}})
    retried, retry_job = download_and_job(k8s, namespace, "flaky", operator, not_named=download["metadata"]["name"])
    assert retry_job.metadata.name != job.metadata.name
    assert retried["spec"]["folder"] == download["spec"]["folder"]
    assert not retry_job.spec.template.spec.tolerations
    publish(reporter_for(k8s, local_cluster, retried), retry_job.metadata.name)
    ready = k8s.wait_phase(namespace, "flaky", "Ready", diagnostics=operator.log_tail)
    assert ready["status"]["downloadRef"]["name"] == retried["metadata"]["name"]
    # The failed download stays as it was; only the new one has a Job of its own.
    assert [j.metadata.uid for j in k8s.download_jobs(download["metadata"]["name"])] == [job.metadata.uid]


def test_retry_annotation_makes_a_new_download_and_job(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                       local_cluster: LocalCluster, stores: Stores) -> None:
    store = stores.nfs(namespace)
    first = ready_cache(k8s, local_cluster, operator, namespace, cache_manifest("again", store))
    old = first["status"]["downloadRef"]["name"]
    k8s.patch_cache(namespace, "again", {"metadata": {"annotations": {"modelcache.dev/retry": "2026-01-01"}}})
    download, job = download_and_job(k8s, namespace, "again", operator, not_named=old)
    assert download["metadata"]["name"] != old
    assert {d["metadata"]["name"] for d in k8s.downloads(store)} == {old, download["metadata"]["name"]}
    assert job.metadata.name == naming.download_job_name(download["metadata"]["name"])
    publish(reporter_for(k8s, local_cluster, download), job.metadata.name, revision=REVISION_B)
    ready = wait_for(lambda: (c := k8s.get_cache(namespace, "again")) and c["status"].get("resolvedRevision")
                     == REVISION_B and c["status"]["phase"] == "Ready" and c, 30,
                     describe="the retried download published", diagnostics=operator.log_tail)
    assert ready["status"]["downloadRef"]["name"] == download["metadata"]["name"]


# ----- deletion -----

def _gone(probe: Callable[[], Any]) -> bool:
    try:
        probe()
    except ApiException as error:
        return bool(error.status == 404)
    return False


def test_deletion_removes_pv_and_pvc_but_never_files_or_the_download(k8s: Cluster, namespace: str,
                                                                     operator: OperatorProcess,
                                                                     local_cluster: LocalCluster,
                                                                     stores: Stores) -> None:
    store = stores.nfs(namespace)
    ready = ready_cache(k8s, local_cluster, operator, namespace, cache_manifest("keep-files", store))
    assert "modelcache.dev/cleanup" in ready["metadata"]["finalizers"]
    download_name = ready["status"]["downloadRef"]["name"]
    jobs_before = {j.metadata.uid for j in k8s.download_jobs()}
    pv_name = naming.pv_name(namespace, "keep-files")
    k8s.delete_cache(namespace, "keep-files")
    wait_for(lambda: k8s.get_cache(namespace, "keep-files") is None, 60, describe="cache deleted",
             diagnostics=operator.log_tail)
    wait_for(lambda: _gone(lambda: k8s.core.read_persistent_volume(pv_name)), 60, describe="PV deleted")
    wait_for(lambda: _pvc(k8s, namespace, naming.pvc_name("keep-files")) is None, 60, describe="PVC deleted")
    wait_for(lambda: "Deleted" in event_reasons(k8s, namespace, "keep-files"), 20, describe="a Deleted event")
    # No Job touches the files: deletion never starts one.
    assert {j.metadata.uid for j in k8s.download_jobs()} == jobs_before
    assert k8s.batch.list_namespaced_job(namespace).items == []
    download = k8s.get_download(OPERATOR_NAMESPACE, download_name)
    assert download is not None and download["status"]["phase"] == "Ready"
    assert k8s.condition(download, "Ready")["status"] == "True"
    assert _bound_pvc(k8s, OPERATOR_NAMESPACE, naming.store_claim_name(store)) is not None


def test_deletion_does_not_wait_for_pods_but_the_claim_does(k8s: Cluster, namespace: str,
                                                            operator: OperatorProcess,
                                                            local_cluster: LocalCluster, stores: Stores) -> None:
    """The cache goes at once; Kubernetes' pvc-protection keeps its claim (and so the PV) until the pods
    that mount it stop."""
    store = stores.nfs(namespace)
    ready_cache(k8s, local_cluster, operator, namespace, cache_manifest("busy", store))
    pvc_name, pv_name = naming.pvc_name("busy"), naming.pv_name(namespace, "busy")
    k8s.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "server"},
        "spec": {"containers": [{"name": "vllm", "image": "vllm", "volumeMounts": [
                     {"name": "model", "mountPath": "/models/busy", "readOnly": True}]}],
                 "volumes": [{"name": "model", "persistentVolumeClaim": {"claimName": pvc_name, "readOnly": True}}]},
    })
    wait_for(lambda: k8s.core.read_namespaced_pod("server", namespace).status.phase == "Running", 60,
             describe="the serving pod Running")
    k8s.delete_cache(namespace, "busy")
    wait_for(lambda: k8s.get_cache(namespace, "busy") is None, 30, describe="cache deleted while in use",
             diagnostics=operator.log_tail)
    claim = wait_for(lambda: (pvc := _pvc(k8s, namespace, pvc_name)) and pvc.metadata.deletion_timestamp and pvc,
                     30, describe="the claim marked for deletion")
    assert "kubernetes.io/pvc-protection" in claim.metadata.finalizers
    time.sleep(operator.resync_seconds * 2)
    assert _pvc(k8s, namespace, pvc_name) is not None, "pvc-protection keeps the claim while the pod runs"
    assert _pv(k8s, pv_name) is not None
    k8s.core.delete_namespaced_pod("server", namespace, grace_period_seconds=0)
    wait_for(lambda: _pvc(k8s, namespace, pvc_name) is None, 60, describe="the claim gone after the pod")
    wait_for(lambda: _pv(k8s, pv_name) is None, 60, describe="the PV gone after its claim")


# ----- restarts, secrets in the open, idle cost -----

def test_operator_restarts_keep_children_and_never_duplicate_jobs(k8s: Cluster, namespace: str,
                                                                 operator: OperatorProcess,
                                                                 local_cluster: LocalCluster,
                                                                 stores: Stores) -> None:
    store = stores.nfs(namespace)
    hf_token_secret(k8s, namespace)
    k8s.create_cache(namespace, with_token(cache_manifest("survivor", store)))
    download, job = download_and_job(k8s, namespace, "survivor", operator)
    pvc = wait_bound(k8s, namespace, naming.pvc_name("survivor"))
    writer = wait_bound(k8s, namespace, download["spec"]["claimName"])
    uids = {"job": job.metadata.uid, "pvc": pvc.metadata.uid, "download": download["metadata"]["uid"],
            "pv": k8s.core.read_persistent_volume(pvc.spec.volume_name).metadata.uid, "writer": writer.metadata.uid}
    reporter = reporter_for(k8s, local_cluster, download)

    operator.kill()  # while Downloading
    reporter.send(api.DownloadReport(jobName=job.metadata.name, state="Downloading", resolvedRevision=REVISION_A,
                                     bytesDone=1, bytesTotal=10, filesDone=0, filesTotal=2), force=True)
    operator.start()
    k8s.wait_phase(namespace, "survivor", "Verifying")  # kwok completed the Job; the final report is pending
    operator.kill()  # while Verifying
    publish(reporter, job.metadata.name)
    operator.start()
    ready = k8s.wait_phase(namespace, "survivor", "Ready", diagnostics=operator.log_tail)
    operator.kill()  # while Ready
    operator.start()
    k8s.wait_phase(namespace, "survivor", "Ready")

    assert [j.metadata.uid for j in k8s.download_jobs()
            if j.metadata.namespace == namespace] == [uids["job"]]
    assert [d["metadata"]["uid"] for d in k8s.downloads(store)] == [uids["download"]]
    pvc_now = _bound_pvc(k8s, namespace, naming.pvc_name("survivor"))
    assert pvc_now.metadata.uid == uids["pvc"]
    assert k8s.core.read_persistent_volume(pvc_now.spec.volume_name).metadata.uid == uids["pv"]
    assert _bound_pvc(k8s, namespace, download["spec"]["claimName"]).metadata.uid == uids["writer"]
    assert ready["status"]["resolvedRevision"] == REVISION_A


def test_token_never_appears_in_logs_events_status_or_job(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                          local_cluster: LocalCluster, stores: Stores) -> None:
    store = stores.nfs(namespace)
    hf_token_secret(k8s, namespace)
    ready = ready_cache(k8s, local_cluster, operator, namespace, with_token(cache_manifest("secretive", store)))
    download = k8s.download_of(ready)
    encoded = base64.b64encode(TOKEN.encode()).decode()
    haystacks = {
        "operator log": operator.log_text(),
        "events": json.dumps([e.to_dict() for e in k8s.events(namespace)], default=str),
        "status": json.dumps(ready),
        "download": json.dumps(download),
        "jobs": json.dumps([j.to_dict() for j in k8s.download_jobs(ready["status"]["downloadRef"]["name"])],
                           default=str),
    }
    for where, text in haystacks.items():
        assert TOKEN not in text, f"token leaked into the {where}"
        assert encoded not in text, f"base64 token leaked into the {where}"
    assert "MC_HUB_TOKEN" in haystacks["jobs"]  # the reference is there, the value is not


def test_idle_ready_cache_costs_no_writes(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                         local_cluster: LocalCluster, stores: Stores) -> None:
    """Level-based resyncs of a Ready cache write nothing: the cache, its download, its store and their
    children keep their resourceVersions over several resync periods."""
    store = stores.nfs(namespace)
    ready = ready_cache(k8s, local_cluster, operator, namespace, cache_manifest("idle", store))
    download = ready["status"]["downloadRef"]["name"]
    time.sleep(operator.resync_seconds * 2)
    before = _versions(k8s, namespace, "idle", store, download)
    time.sleep(operator.resync_seconds * 3)
    assert _versions(k8s, namespace, "idle", store, download) == before


def _versions(k8s: Cluster, namespace: str, name: str, store: str, download: str) -> dict[str, str]:
    pvc = k8s.core.read_namespaced_persistent_volume_claim(naming.pvc_name(name), namespace)
    writer = k8s.core.read_namespaced_persistent_volume_claim(naming.store_claim_name(store), OPERATOR_NAMESPACE)
    identity = naming.downloader_identity_name(download)
    cache, model_store = k8s.get_cache(namespace, name), k8s.get_store(store)
    model_download = k8s.get_download(OPERATOR_NAMESPACE, download)
    assert cache is not None and model_download is not None and model_store is not None
    return {
        "cache": cache["metadata"]["resourceVersion"],
        "download": model_download["metadata"]["resourceVersion"],
        "store": model_store["metadata"]["resourceVersion"],
        "pvc": pvc.metadata.resource_version,
        "pv": k8s.core.read_persistent_volume(pvc.spec.volume_name).metadata.resource_version,
        "writer pvc": writer.metadata.resource_version,
        "writer pv": k8s.core.read_persistent_volume(writer.spec.volume_name).metadata.resource_version,
        "job": k8s.download_jobs(download)[0].metadata.resource_version,
        "serviceaccount": k8s.core.read_namespaced_service_account(identity, OPERATOR_NAMESPACE
                                                                   ).metadata.resource_version,
        "role": k8s.rbac.read_namespaced_role(identity, OPERATOR_NAMESPACE).metadata.resource_version,
    }
