"""Bad input is refused at apply time by the apiserver itself (OpenAPI schema + CEL) with a message naming the
field, and nothing is stored for it: ModelCaches on create and on update (the immutable fields), and
ModelStores likewise.

The apiserver validates an object against the CRD schema before any validating admission webhook sees it, so
these cases hold whether or not the operator (and its webhook) runs; every refusal asserted here must come
from the schema, never from a webhook."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelcache_operator.api import v1alpha2 as api
from tests.support.kube import Cluster, wait_for

pytestmark = pytest.mark.integration

NFS_SERVER = "10.0.0.2"
VALID: dict[str, Any] = {
    "source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B", "revision": "main"}},
    "store": "models",
}
VALID_STORE: dict[str, Any] = {
    "nfs": {"server": NFS_SERVER, "path": "/exports/models"},
    "namespaceSelector": {},
}
OSS = {"bucket": "oss-models", "path": "/models", "url": "http://oss-cn-hangzhou-internal.aliyuncs.com",
       "roleName": "demo-role"}
DOTDOT = "must not contain '..' path segments"
POSITIVE_QUANTITY = "must be a positive quantity"


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`base` with the dotted `path` set to value (None deletes it)."""
    spec = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return spec


def with_changes(path: str, value: Any) -> dict[str, Any]:
    return changed(VALID, path, value)


def store_with(path: str, value: Any) -> dict[str, Any]:
    return changed(VALID_STORE, path, value)


def backend(**backend: Any) -> dict[str, Any]:
    """VALID_STORE with its NFS backend replaced."""
    return {**{k: v for k, v in VALID_STORE.items() if k != "nfs"}, **backend}


def pattern(regex: str) -> str:
    return f"should match '{regex}'"


def unsupported(value: str) -> str:
    return f'Unsupported value: "{value}"'


# (case id, spec, the field path the apiserver's message names, text of the rule's message)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("no-source", with_changes("source", None), "spec.source", "Required value"),
    ("two-sources", with_changes("source.modelscope", {"model": "Qwen/Qwen3-8B"}), "spec.source",
     "exactly one of spec.source.huggingface or spec.source.modelscope must be set"),
    ("empty-source", with_changes("source", {}), "spec.source",
     "exactly one of spec.source.huggingface or spec.source.modelscope must be set"),
    ("storage-present", with_changes("storage", {"nfs": {"server": NFS_SERVER, "path": "/exports/models"},
                                                 "capacity": "10Gi"}),
     "spec.storage", "spec.storage was removed in v1alpha2"),
    ("storage-empty", with_changes("storage", {}), "spec.storage", "spec.storage was removed in v1alpha2"),
    ("repo-without-owner", with_changes("source.huggingface.repo", "qwen"), "spec.source.huggingface.repo",
     pattern(api.REPO_ID_PATTERN)),
    ("repo-traversal", with_changes("source.huggingface.repo", "../etc/passwd"), "spec.source.huggingface.repo",
     pattern(api.REPO_ID_PATTERN)),
    ("repo-with-space", with_changes("source.huggingface.repo", "Qwen/Qwen 3"), "spec.source.huggingface.repo",
     pattern(api.REPO_ID_PATTERN)),
    ("repo-missing", with_changes("source.huggingface.repo", None), "spec.source.huggingface.repo",
     "Required value"),
    ("revision-with-space", with_changes("source.huggingface.revision", "main branch"),
     "spec.source.huggingface.revision", pattern(api.REVISION_PATTERN)),
    ("revision-dotdot", with_changes("source.huggingface.revision", "v1/../../main"),
     "spec.source.huggingface.revision", DOTDOT),
    ("endpoint-not-http", with_changes("source.huggingface.endpoint", "ftp://mirror"),
     "spec.source.huggingface.endpoint", pattern(api.ENDPOINT_PATTERN)),
    ("token-secret-bad-name", with_changes("source.huggingface.tokenSecretRef", {"name": "HF_Token"}),
     "spec.source.huggingface.tokenSecretRef.name", pattern(api.DNS_LABEL_PATTERN)),
    ("token-secret-bad-key", with_changes("source.huggingface.tokenSecretRef", {"name": "hf", "key": "a/b"}),
     "spec.source.huggingface.tokenSecretRef.key", pattern(api.SECRET_KEY_PATTERN)),
    ("modelscope-bad-model", with_changes("source", {"modelscope": {"model": "no-owner"}}),
     "spec.source.modelscope.model", pattern(api.REPO_ID_PATTERN)),
    ("modelscope-revision-dotdot", with_changes("source", {"modelscope": {"model": "Qwen/Qwen3-8B",
                                                                          "revision": "../master"}}),
     "spec.source.modelscope.revision", pattern(api.REVISION_PATTERN)),
    ("modelscope-revision-inner-dotdot", with_changes("source", {"modelscope": {"model": "Qwen/Qwen3-8B",
                                                                                "revision": "a/../b"}}),
     "spec.source.modelscope.revision", DOTDOT),
    ("store-uppercase", with_changes("store", "Models"), "spec.store", "should match"),
    ("store-underscore", with_changes("store", "nfs_models"), "spec.store", "should match"),
    ("store-too-long", with_changes("store", "s" * 254), "spec.store", "may not be more than 253"),
    ("workers-zero", with_changes("download.maxWorkers", 0), "spec.download.maxWorkers",
     "should be greater than or equal to 1"),
    ("workers-huge", with_changes("download.maxWorkers", 1000), "spec.download.maxWorkers",
     "should be less than or equal to 64"),
    ("backoff-negative", with_changes("download.backoffLimit", -1), "spec.download.backoffLimit",
     "should be greater than or equal to 0"),
    ("deadline-too-short", with_changes("download.activeDeadlineSeconds", 5),
     "spec.download.activeDeadlineSeconds", "should be greater than or equal to 60"),
    ("download-asks-gpu", with_changes("download.resources", {"limits": {"nvidia.com/gpu": "1"}}),
     "spec.download.resources.limits", "the download Job never requests GPUs"),
    ("download-requests-amd-gpu", with_changes("download.resources", {"requests": {"amd.com/gpu": "1"}}),
     "spec.download.resources.requests", "the download Job never requests GPUs"),
    ("download-bad-quantity", with_changes("download.resources", {"requests": {"cpu": "lots"}}),
     "spec.download.resources.requests", "values must be quantities such as 500m or 2Gi"),
    ("download-bad-limit-quantity", with_changes("download.resources", {"limits": {"memory": "2 GiB"}}),
     "spec.download.resources.limits", "values must be quantities such as 500m or 2Gi"),
    ("toleration-bad-operator", with_changes("download.tolerations", [{"key": "k", "operator": "Maybe"}]),
     "spec.download.tolerations[0].operator", unsupported("Maybe")),
    ("prewarm-bad-mode", with_changes("prewarm.mode", "sometimes"), "spec.prewarm.mode", unsupported("sometimes")),
    ("prewarm-zero-concurrency", with_changes("prewarm.concurrency", 0), "spec.prewarm.concurrency",
     "should be greater than or equal to 1"),
    ("serving-bad-policy", with_changes("serving.notReadyPolicy", "maybe"), "spec.serving.notReadyPolicy",
     unsupported("maybe")),
    ("serving-relative-mount", with_changes("serving.mountPath", "models"), "spec.serving.mountPath",
     pattern(api.ABSOLUTE_PATH_PATTERN)),
    ("serving-dotdot-mount", with_changes("serving.mountPath", "/models/../etc"), "spec.serving.mountPath", DOTDOT),
]

# (case id, ModelStore spec, field path, text of the rule's message)
INVALID_STORES: list[tuple[str, dict[str, Any], str, str]] = [
    ("two-backends", store_with("hostPath", {"path": "/data"}), "spec", "exactly one backend must be set"),
    ("no-backend", store_with("nfs", None), "spec", "exactly one backend must be set"),
    ("no-namespace-selector", store_with("namespaceSelector", None), "spec.namespaceSelector", "Required value"),
    ("selector-bad-operator", store_with("namespaceSelector", {"matchExpressions": [
        {"key": "team", "operator": "Equals", "values": ["a"]}]}),
     "spec.namespaceSelector.matchExpressions[0].operator", unsupported("Equals")),
    ("capacity-not-quantity", store_with("capacity", "lots"), "spec.capacity", POSITIVE_QUANTITY),
    ("capacity-negative", store_with("capacity", "-5Gi"), "spec.capacity", POSITIVE_QUANTITY),
    ("quota-not-quantity", store_with("quota", "half"), "spec.quota", POSITIVE_QUANTITY),
    ("quota-zero", store_with("quota", "0"), "spec.quota", POSITIVE_QUANTITY),
    ("default-not-bool", store_with("default", "yes"), "spec.default", "must be of type boolean"),
    ("retention-recycle", store_with("retention", {"policy": "Recycle"}), "spec.retention.policy",
     unsupported("Recycle")),
    ("retention-negative-ttl", store_with("retention", {"ttlSecondsAfterUnused": -1}),
     "spec.retention.ttlSecondsAfterUnused", "should be greater than or equal to 0"),
    ("retention-too-many-revisions", store_with("retention", {"keepRevisions": 101}),
     "spec.retention.keepRevisions", "should be less than or equal to 100"),
    ("hub-credentials-bad-name", store_with("hubCredentials", {"huggingface": {"name": "HF_Token"}}),
     "spec.hubCredentials.huggingface.name", pattern(api.DNS_LABEL_PATTERN)),
    ("nfs-relative-path", store_with("nfs.path", "exports"), "spec.nfs.path", pattern(api.ABSOLUTE_PATH_PATTERN)),
    ("nfs-dotdot-path", store_with("nfs.path", "/exports/../etc"), "spec.nfs.path", DOTDOT),
    ("nfs-no-server", store_with("nfs.server", None), "spec.nfs.server", "Required value"),
    ("nfs-no-path", store_with("nfs.path", None), "spec.nfs.path", "Required value"),
    ("ossfs2-no-bucket", backend(ossfs2={k: v for k, v in OSS.items() if k != "bucket"}), "spec.ossfs2.bucket",
     "Required value"),
    ("ossfs2-uppercase-bucket", backend(ossfs2={**OSS, "bucket": "Models"}), "spec.ossfs2.bucket", "should match"),
    ("ossfs2-rrsa-without-role", backend(ossfs2={k: v for k, v in OSS.items() if k != "roleName"}),
     "spec.ossfs2.roleName", "roleName is required when authType is rrsa"),
    ("ossfs2-secret-without-ref", backend(ossfs2={**OSS, "authType": "secret"}), "spec.ossfs2.secretRef",
     "secretRef is required when authType is secret"),
    ("ossfs2-relative-path", backend(ossfs2={**OSS, "path": "models/x"}), "spec.ossfs2.path",
     pattern(api.ABSOLUTE_PATH_PATTERN)),
    ("ossfs2-dotdot-path", backend(ossfs2={**OSS, "path": "/models/../etc"}), "spec.ossfs2.path", DOTDOT),
    ("ossfs2-shell-in-opts", backend(ossfs2={**OSS, "otherOpts": "-o x; rm -rf /"}), "spec.ossfs2.otherOpts",
     "should match"),
    ("efs-bad-id", backend(efs={"fileSystemId": "fs-XYZ"}), "spec.efs.fileSystemId", "should match"),
    ("efs-bad-access-point", backend(efs={"fileSystemId": "fs-0123456789abcdef0", "accessPointId": "ap-1"}),
     "spec.efs.accessPointId", "should match"),
    ("efs-dotdot-path", backend(efs={"fileSystemId": "fs-0123456789abcdef0", "path": "/a/.."}), "spec.efs.path",
     DOTDOT),
    ("storageclass-bad-name", backend(storageClass={"name": "Fast_RWX"}), "spec.storageClass.name", "should match"),
    ("hostpath-relative", backend(hostPath={"path": "data"}), "spec.hostPath.path",
     pattern(api.ABSOLUTE_PATH_PATTERN)),
    ("hostpath-dotdot", backend(hostPath={"path": "/var/lib/../../etc"}), "spec.hostPath.path", DOTDOT),
    *((f"download-env-{name.lower().replace('_', '-')}",
       store_with("downloadJob", {"env": [{"name": name, "value": "/etc/ssl/mine.pem"}]}),
       "spec.downloadJob.env[0].name", "are set by the operator (use caBundle for a CA)")
      for name in ("MC_ROOT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")),
]


def test_at_least_25_cases() -> None:
    assert len(INVALID) >= 25
    assert len(INVALID_STORES) >= 25


def assert_refused_by_the_schema(refused: ApiException, field: str, message: str) -> None:
    """422 from the apiserver's own validation, with a cause on exactly `field` that says `message`."""
    assert refused.status == 422, refused.body
    status = json.loads(refused.body)
    assert "admission webhook" not in status["message"], f"refused by a webhook, not by the schema: {status}"
    causes = [(c.get("field"), c.get("message", "")) for c in status["details"]["causes"]]
    assert any(f == field and message in m for f, m in causes), f"no cause on {field} saying {message!r}: {causes}"


def cache(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec}


def store(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.STORE_KIND, "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(("case", "spec", "field", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_is_refused_naming_the_field(case: str, spec: dict[str, Any], field: str, message: str,
                                                  k8s: Cluster, namespace: str) -> None:
    with pytest.raises(ApiException) as refused:
        k8s.create_cache(namespace, cache(case, spec))
    assert_refused_by_the_schema(refused.value, field, message)
    assert k8s.get_cache(namespace, case) is None


@pytest.mark.parametrize(("case", "spec", "field", "message"), INVALID_STORES, ids=[c[0] for c in INVALID_STORES])
def test_invalid_store_is_refused_naming_the_field(case: str, spec: dict[str, Any], field: str, message: str,
                                                   k8s: Cluster) -> None:
    name = f"bad-{case}-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ApiException) as refused:
        k8s.create_store(store(name, spec))
    assert_refused_by_the_schema(refused.value, field, message)
    assert k8s.get_store(name) is None


# ----- updates: what may not change -----

def _admitted(create: Callable[[], Any]) -> None:
    """Creates a valid object. An admission webhook, if the operator runs, may not have seen a store created a
    moment ago yet: its refusal is retried, any other error fails at once."""
    def attempt() -> bool:
        try:
            create()
        except ApiException as error:
            if error.status == 409:
                return True  # an earlier attempt got through after all
            if "admission webhook" in (error.body or ""):
                return False
            raise
        return True
    wait_for(attempt, 30, interval=1, describe="the valid object admitted")


@pytest.fixture
def cache_store(k8s: Cluster, namespace: str) -> Iterator[str]:
    """A ModelStore the test namespace may use, so that valid caches are admitted."""
    name = f"inv-{uuid.uuid4().hex[:6]}"
    k8s.create_store(store(name, {"nfs": {"server": NFS_SERVER, "path": f"/exports/{name}"},
                                  "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}))
    yield name
    k8s.delete_store(name)


HF = "huggingface"
# (case id, changes to the created cache's spec, merge patch of its spec, field path, text of the rule's message)
IMMUTABLE: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    ("store-changed", {}, {"store": "other-store"}, "spec.store", "spec.store is immutable"),
    ("store-removed", {}, {"store": None}, "spec.store", "spec.store is immutable"),
    ("repo-changed", {}, {"source": {HF: {"repo": "Qwen/Qwen3-8B"}}}, "spec.source",
     "the hub and repo are immutable"),
    ("hub-changed", {}, {"source": {HF: None, "modelscope": {"model": "Qwen/Qwen3-0.6B"}}}, "spec.source",
     "the hub and repo are immutable"),
    ("token-added", {}, {"source": {HF: {"tokenSecretRef": {"name": "hf-token"}}}}, "spec.source",
     "adding or removing tokenSecretRef moves the cache between a shared and a namespace-private folder"),
    ("token-removed", {"tokenSecretRef": {"name": "hf-token"}}, {"source": {HF: {"tokenSecretRef": None}}},
     "spec.source", "adding or removing tokenSecretRef moves the cache between a shared and a namespace-private"),
    ("storage-added", {}, {"storage": {"nfs": {"server": NFS_SERVER, "path": "/exports/x"}}}, "spec.storage",
     "spec.storage was removed in v1alpha2"),
]


@pytest.mark.parametrize(("case", "source", "patch", "field", "message"), IMMUTABLE, ids=[c[0] for c in IMMUTABLE])
def test_immutable_cache_fields_are_refused_on_update(case: str, source: dict[str, Any], patch: dict[str, Any],
                                                      field: str, message: str, k8s: Cluster, namespace: str,
                                                      cache_store: str) -> None:
    spec = with_changes("store", cache_store)
    spec["source"][HF] |= source
    _admitted(lambda: k8s.create_cache(namespace, cache(case, spec)))
    before = (k8s.get_cache(namespace, case) or {})["spec"]
    with pytest.raises(ApiException) as refused:
        k8s.patch_cache(namespace, case, {"spec": patch})
    assert_refused_by_the_schema(refused.value, field, message)
    assert (k8s.get_cache(namespace, case) or {})["spec"] == before


def test_revision_and_file_filters_may_change(k8s: Cluster, namespace: str, cache_store: str) -> None:
    """What the immutability rules leave open: a new revision or filter downloads beside the old one."""
    _admitted(lambda: k8s.create_cache(namespace, cache("mutable", with_changes("store", cache_store))))
    k8s.patch_cache(namespace, "mutable", {"spec": {"source": {HF: {
        "revision": "v2.0", "allowPatterns": ["*.safetensors"], "endpoint": "https://hf-mirror.com"}}}})
    stored = k8s.get_cache(namespace, "mutable")
    assert stored is not None
    assert stored["spec"]["source"][HF] == {"repo": "Qwen/Qwen3-0.6B", "revision": "v2.0",
                                            "allowPatterns": ["*.safetensors"], "endpoint": "https://hf-mirror.com"}


@pytest.fixture
def created_stores(k8s: Cluster) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        k8s.delete_store(name)


STORE_UPDATES: list[tuple[str, dict[str, Any]]] = [
    ("nfs-path-changed", {"nfs": {"path": "/exports/elsewhere"}}),
    ("nfs-server-changed", {"nfs": {"server": "10.0.0.3"}}),
    ("backend-switched", {"nfs": None, "efs": {"fileSystemId": "fs-0123456789abcdef0"}}),
    ("backend-added", {"hostPath": {"path": "/data"}}),
]


@pytest.mark.parametrize(("case", "patch"), STORE_UPDATES, ids=[c[0] for c in STORE_UPDATES])
def test_store_backend_is_immutable(case: str, patch: dict[str, Any], k8s: Cluster,
                                    created_stores: list[str]) -> None:
    name = f"imm-{uuid.uuid4().hex[:6]}"
    spec = store_with("nfs.path", f"/exports/{name}")
    created_stores.append(name)
    _admitted(lambda: k8s.create_store(store(name, spec)))
    with pytest.raises(ApiException) as refused:
        k8s.custom.patch_cluster_custom_object(api.GROUP, api.VERSION, api.STORE_PLURAL, name, {"spec": patch})
    # "backend-added" breaks the exactly-one rule as well; every case breaks the immutability rule.
    assert_refused_by_the_schema(refused.value, "spec", "the backend is immutable; create a new ModelStore")
    stored = k8s.get_store(name)
    assert stored is not None and stored["spec"]["nfs"] == spec["nfs"]
    assert set(stored["spec"]) & set(api.STORAGE_BACKENDS) == {"nfs"}


def test_store_policy_fields_may_change(k8s: Cluster, created_stores: list[str]) -> None:
    name = f"mut-{uuid.uuid4().hex[:6]}"
    created_stores.append(name)
    _admitted(lambda: k8s.create_store(store(name, store_with("nfs.path", f"/exports/{name}"))))
    changes = {"namespaceSelector": {"matchLabels": {"team": "a"}}, "quota": "500Gi", "capacity": "2Ti",
               "retention": {"policy": "Delete", "ttlSecondsAfterUnused": 60, "keepRevisions": 0}}
    k8s.custom.patch_cluster_custom_object(api.GROUP, api.VERSION, api.STORE_PLURAL, name, {"spec": changes})
    stored = k8s.get_store(name)
    assert stored is not None
    assert {k: stored["spec"][k] for k in changes} == changes


def test_validated_spec_matches_the_pydantic_model() -> None:
    """The Python models reject every case too, so the reconcilers' own guard agrees with the CRD, except
    for the rules only CEL expresses."""
    from pydantic import ValidationError

    def accepted(model: Any, cases: list[tuple[str, dict[str, Any], str, str]]) -> set[str]:
        passed = set()
        for case, spec, _, _ in cases:
            try:
                model.model_validate(spec)
            except ValidationError:
                continue
            passed.add(case)
        return passed

    # Exactly-one, removed fields, quantities, '..' segments, GPU keys and conditional requirements are CEL's.
    assert accepted(api.ModelCacheSpec, INVALID) == {
        "two-sources", "empty-source", "storage-present", "storage-empty", "revision-dotdot",
        "modelscope-revision-inner-dotdot", "download-asks-gpu", "download-requests-amd-gpu",
        "download-bad-quantity", "download-bad-limit-quantity", "serving-dotdot-mount"}
    # pydantic's lax mode also reads "yes" as a boolean; the apiserver's schema never stores one.
    assert accepted(api.ModelStoreSpec, INVALID_STORES) == {
        "default-not-bool", "two-backends", "no-backend", "capacity-not-quantity", "capacity-negative",
        "quota-not-quantity", "quota-zero", "nfs-dotdot-path", "ossfs2-rrsa-without-role", "ossfs2-secret-without-ref",
        "ossfs2-dotdot-path", "efs-dotdot-path", "hostpath-dotdot", "download-env-mc-root",
        "download-env-ssl-cert-file", "download-env-requests-ca-bundle"}
