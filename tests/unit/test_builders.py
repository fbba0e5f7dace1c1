"""Pure builders: names, the store layout, PV/PVC per backend, the download Job, and the CRD schema shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcache_operator.api import crd
from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.builders import jobs, layout, naming, storage

STORE_BODY: dict[str, Any] = {"kind": "ModelStore", "metadata": {"name": "oss-models", "uid": "store-uid"}}
DOWNLOAD_BODY: dict[str, Any] = {"kind": "ModelDownload", "metadata": {"name": "nfs-qwen-qwen3-8b-1234abcd",
                                                       "namespace": "modelcache-system", "uid": "dl-uid"}}
OSS = {"bucket": "oss-models", "path": "/models", "url": "http://oss-cn-hangzhou-internal.aliyuncs.com",
       "roleName": "role", "otherOpts": "-o memory_data_cache_size=16g"}
NFS = {"server": "10.0.0.2", "path": "/exports/models", "mountOptions": ["nfsvers=4.1"]}


def store(**backend: Any) -> api.ModelStoreSpec:
    return api.ModelStoreSpec.model_validate({**backend, "namespaceSelector": {}, "capacity": "2Ti"})


def cache(token: bool = False, **source: Any) -> api.ModelCacheSpec:
    hf: dict[str, Any] = {"repo": "Qwen/Qwen3-8B", "revision": "main", **source}
    if token:
        hf["tokenSecretRef"] = {"name": "hf-token", "key": "HF_TOKEN"}
    return api.ModelCacheSpec.model_validate({"source": {"huggingface": hf}})


def test_names_are_deterministic_bounded_and_unique() -> None:
    assert naming.pv_name("llm", "qwen") == naming.pv_name("llm", "qwen")
    assert naming.pv_name("llm", "qwen") != naming.pv_name("dev", "qwen")
    long_name = "x" * 250
    assert len(naming.pvc_name(long_name)) <= 253
    assert naming.pvc_name(long_name) != naming.pvc_name(long_name[:-1] + "y")
    download = naming.download_name("s" * 200, "Qwen/Qwen3-8B", {"k": 1})
    assert len(download) <= 63 and download != naming.download_name("s" * 200, "Qwen/Qwen3-8B", {"k": 2})
    assert len(naming.download_job_name(download)) <= 63
    assert naming.download_name("nfs", "Qwen/Qwen3-0.6B", {"k": 1}).startswith("nfs-qwen-qwen3-0-6b-")


def test_one_folder_per_repo_commit_and_filter() -> None:
    shared = layout.placement(cache(), store(nfs=NFS), "team-a")
    assert (shared.model_dir, shared.filter, shared.private) == ("hf/Qwen/Qwen3-8B", "all", False)
    assert shared.download_folder == "hf/Qwen/Qwen3-8B/all"
    assert shared.serving_path("a" * 40) == "all/" + "a" * 40
    assert layout.placement(cache(), store(nfs=NFS), "team-b") == shared  # every namespace, one folder
    filtered = layout.placement(cache(allowPatterns=["*.json"]), store(nfs=NFS), "team-a")
    assert filtered.filter.startswith("f-") and filtered.filter != shared.filter
    same_filter_reordered = layout.placement(cache(allowPatterns=["*.json"], ignorePatterns=[]), store(nfs=NFS),
                                             "team-b")
    assert same_filter_reordered.filter == filtered.filter


def test_own_token_gets_a_namespace_private_folder() -> None:
    private = layout.placement(cache(token=True), store(nfs=NFS), "team-a")
    assert private.private and private.model_dir == "private/team-a/hf/Qwen/Qwen3-8B"
    assert private.download_folder == "all"  # relative to the private claim, which is the model folder
    assert layout.placement(cache(token=True), store(nfs=NFS), "team-b").model_dir != private.model_dir


def test_storage_class_stores_are_per_namespace() -> None:
    place = layout.placement(cache(), store(storageClass={"name": "rwx"}), "team-a")
    assert place.private and place.dynamic
    assert place.download_folder == "hf/Qwen/Qwen3-8B/all"
    assert place.serving_path("c" * 40) == "hf/Qwen/Qwen3-8B/all/" + "c" * 40


def test_download_key_shares_across_namespaces_only_when_shared() -> None:
    spec = cache()
    assert layout.download_key(spec, "nfs", "team-a", False, None) == layout.download_key(spec, "nfs", "team-b",
                                                                                         False, None)
    assert layout.download_key(spec, "nfs", "team-a", True, None) != layout.download_key(spec, "nfs", "team-b",
                                                                                        True, None)
    assert layout.download_key(spec, "nfs", "a", False, None) != layout.download_key(spec, "nfs", "a", False, "1")
    moved = cache(revision="v2")
    assert layout.download_key(spec, "nfs", "a", False, None) != layout.download_key(moved, "nfs", "a", False, None)


def test_ossfs2_read_only_pv_points_at_the_model_folder() -> None:
    spec = store(ossfs2=OSS)
    pv = storage.persistent_volume("pv-1", spec, "hf/Qwen/Qwen3-8B", read_only=True, claim=("team-a", "claim"),
                                   labels={}, operator_namespace="modelcache-system")
    csi = pv["spec"]["csi"]
    assert csi["driver"] == "ossplugin.csi.alibabacloud.com"
    assert csi["volumeHandle"] == "pv-1"  # the guide: volumeHandle equals the PV name
    assert csi["readOnly"] is True
    assert csi["volumeAttributes"] == {"fuseType": "ossfs2", "bucket": "oss-models",
                                       "path": "/models/hf/Qwen/Qwen3-8B", "url": OSS["url"],
                                       "otherOpts": OSS["otherOpts"], "authType": "rrsa", "roleName": "role"}
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["claimRef"]["namespace"] == "team-a" and pv["spec"]["claimRef"]["name"] == "claim"


def test_ossfs2_secret_auth_uses_the_operator_namespace() -> None:
    oss = {**OSS, "authType": "secret", "secretRef": {"name": "oss-ak"}}
    oss.pop("roleName")
    pv = storage.persistent_volume("pv-1", store(ossfs2=oss), "", read_only=False, claim=("ns", "c"), labels={},
                                   operator_namespace="modelcache-system")
    assert pv["spec"]["csi"]["nodePublishSecretRef"] == {"name": "oss-ak", "namespace": "modelcache-system"}
    assert "authType" not in pv["spec"]["csi"]["volumeAttributes"]


def test_nfs_read_only_at_the_volume_level() -> None:
    pv = storage.persistent_volume("pv-1", store(nfs=NFS), "hf/a/b", read_only=True, claim=("ns", "c"), labels={},
                                   operator_namespace="x")
    assert pv["spec"]["nfs"] == {"server": "10.0.0.2", "path": "/exports/models/hf/a/b", "readOnly": True}
    assert pv["spec"]["mountOptions"] == ["nfsvers=4.1"]


@pytest.mark.parametrize(("efs", "handle"), [
    ({"fileSystemId": "fs-0123456789abcdef0"}, "fs-0123456789abcdef0:/hf/a/b"),
    ({"fileSystemId": "fs-0123456789abcdef0", "path": "/m"}, "fs-0123456789abcdef0:/m/hf/a/b"),
    ({"fileSystemId": "fs-0123456789abcdef0", "accessPointId": "fsap-0123456789abcdef0"},
     "fs-0123456789abcdef0:/hf/a/b:fsap-0123456789abcdef0"),
])
def test_efs_volume_handle(efs: dict[str, str], handle: str) -> None:
    pv = storage.persistent_volume("pv-1", store(efs=efs), "hf/a/b", read_only=True, claim=("ns", "c"),
                                   labels={}, operator_namespace="x")
    assert pv["spec"]["csi"] == {"driver": "efs.csi.aws.com", "volumeHandle": handle, "readOnly": True}


def test_store_writer_claim_is_the_root_in_the_operator_namespace() -> None:
    pv, pvc = storage.store_writer_claim(STORE_BODY, store(nfs=NFS), "modelcache-system")
    assert pv["spec"]["nfs"]["path"] == "/exports/models" and pv["spec"]["nfs"]["readOnly"] is False
    assert pvc["metadata"]["namespace"] == "modelcache-system"
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"] and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["metadata"]["ownerReferences"][0]["uid"] == "store-uid"


def test_storage_class_claim_is_dynamic() -> None:
    pvc = storage.persistent_volume_claim("c", "team-a", store(storageClass={"name": "rwx"}), read_only=False,
                                          volume_name=None, labels={}, owners=[])
    assert pvc["spec"]["storageClassName"] == "rwx" and "volumeName" not in pvc["spec"]


def download_spec(token: bool = False, **extra: Any) -> api.ModelDownloadSpec:
    source = cache(token=token, allowPatterns=["*.safetensors"], endpoint="https://hf-mirror.example").source
    return api.ModelDownloadSpec(store="nfs", source=source, folder="hf/Qwen/Qwen3-8B/f-1", claimName="writer",
                                 requestedBy="team-a/qwen", **extra)


def test_download_job_mounts_only_its_folder_and_carries_tokens_by_reference() -> None:
    credentials = api.ModelStoreSpec.model_validate({
        "nfs": NFS, "namespaceSelector": {}, "hubCredentials": {"huggingface": {"name": "shared-hf"}}})
    job = jobs.download_job(DOWNLOAD_BODY, download_spec(), credentials, "img:1")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "cache", "mountPath": "/cache", "subPath": "hf/Qwen/Qwen3-8B/f-1"} in container["volumeMounts"]
    assert pod["volumes"][0] == {"name": "cache", "persistentVolumeClaim": {"claimName": "writer"}}
    env = {e["name"]: e for e in container["env"]}
    assert env["MC_HUB_TOKEN"] == {"name": "MC_HUB_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "shared-hf", "key": "token"}}}
    assert env["MC_DOWNLOAD_NAME"]["value"] == DOWNLOAD_BODY["metadata"]["name"]
    assert env["MC_ENDPOINT"]["value"] == "https://hf-mirror.example"
    assert json.loads(env["MC_ALLOW_PATTERNS"]["value"]) == ["*.safetensors"]
    assert container["image"] == "img:1"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and 11 in rules[0]["onExitCodes"]["values"]
    assert 75 not in rules[0]["onExitCodes"]["values"]  # network errors are retried
    assert container["securityContext"]["runAsNonRoot"] is True
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelDownload"


def test_finished_download_and_cleanup_jobs_expire() -> None:
    """Their outcome is in the ModelDownload's status by then; the operator does not run them again."""
    download = jobs.download_job(DOWNLOAD_BODY, download_spec(), store(nfs=NFS), "img:1")
    cleanup = jobs.cleanup_job(DOWNLOAD_BODY, download_spec(), "a" * 40, "img:1")
    assert download["spec"]["ttlSecondsAfterFinished"] == jobs.FINISHED_JOB_TTL_SECONDS
    assert cleanup["spec"]["ttlSecondsAfterFinished"] == jobs.FINISHED_JOB_TTL_SECONDS


def test_private_download_uses_the_caches_own_token() -> None:
    job = jobs.download_job(DOWNLOAD_BODY, download_spec(token=True), store(nfs=NFS), "img:1")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MC_HUB_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
    no_token = jobs.download_job(DOWNLOAD_BODY, download_spec(), store(nfs=NFS), "img:1")
    assert "MC_HUB_TOKEN" not in json.dumps(no_token)


def test_downloader_role_is_limited_to_its_own_download_status() -> None:
    _, role, binding = jobs.downloader_rbac(DOWNLOAD_BODY)
    assert role["rules"] == [{"apiGroups": ["modelcache.dev"], "resources": ["modeldownloads/status"],
                              "resourceNames": [DOWNLOAD_BODY["metadata"]["name"]], "verbs": ["get", "patch"]}]
    assert binding["subjects"][0]["name"] == naming.downloader_identity_name(DOWNLOAD_BODY["metadata"]["name"])


def test_hostpath_download_job_hands_its_folder_to_the_downloader_user() -> None:
    job = jobs.download_job(DOWNLOAD_BODY, download_spec(), store(hostPath={"path": "/var/lib/models"}), "img:1")
    init = job["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["volume-permissions"]
    assert init[0]["command"] == ["chown", "65532:65532", "/cache"]  # the folder only, not recursive
    assert init[0]["volumeMounts"][0]["subPath"] == "hf/Qwen/Qwen3-8B/f-1"
    assert init[0]["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    nfs_job = jobs.download_job(DOWNLOAD_BODY, download_spec(), store(nfs=NFS), "img:1")
    assert nfs_job["spec"]["template"]["spec"]["initContainers"] == []


def _walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


@pytest.mark.parametrize("kind", crd.KINDS, ids=lambda k: k.kind)
def test_crd_schemas_are_structural(kind: crd.Kind) -> None:
    definition = crd.custom_resource_definition(kind)
    schema = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node
        assert not isinstance(node.get("additionalProperties"), bool)


def test_cache_crd_has_no_storage_fields_but_refuses_them() -> None:
    schema = crd.custom_resource_definition(crd.CACHE)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec_schema = schema["properties"]["spec"]
    assert spec_schema["required"] == ["source"]
    assert "image" not in spec_schema["properties"]["download"]["properties"]
    rules = {r["rule"]: r for r in spec_schema["x-kubernetes-validations"]}
    assert rules["!has(self.storage)"]["fieldPath"] == ".storage"
    assert crd.STORE.scope == "Cluster" and crd.CACHE.scope == "Namespaced"
