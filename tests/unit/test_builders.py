"""Pure builders: names, PV/PVC per backend, the download Job, and the CRD schema shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcache_operator.api import crd
from modelcache_operator.api import v1alpha1 as api
from modelcache_operator.builders import jobs, naming, storage

BODY = {"metadata": {"name": "qwen", "namespace": "llm", "uid": "1234"}}


def spec(**storage_spec: Any) -> api.ModelCacheSpec:
    return api.ModelCacheSpec.model_validate({
        "source": {"huggingface": {"repo": "Qwen/Qwen3-8B", "revision": "main",
                                   "tokenSecretRef": {"name": "hf-token", "key": "HF_TOKEN"},
                                   "allowPatterns": ["*.safetensors"], "endpoint": "https://hf-mirror.example"}},
        "storage": {**storage_spec, "capacity": "80Gi"},
    })


OSS = {"bucket": "oss-models", "path": "/models/qwen", "url": "http://oss-cn-hangzhou-internal.aliyuncs.com",
       "roleName": "role", "otherOpts": "-o memory_data_cache_size=16g"}


def test_names_are_deterministic_bounded_and_unique() -> None:
    assert naming.pv_name("llm", "qwen") == naming.pv_name("llm", "qwen")
    assert naming.pv_name("llm", "qwen") != naming.pv_name("dev", "qwen")
    long_name = "x" * 250
    assert len(naming.pvc_name(long_name)) <= 253
    assert naming.pvc_name(long_name) != naming.pvc_name(long_name[:-1] + "y")
    job = naming.download_job_name(long_name, "abcd1234")
    assert len(job) <= 63 and job.endswith("-abcd1234")
    assert len(naming.label_value(long_name)) <= 63


def test_source_fingerprint_changes_with_revision_and_retry_token_only() -> None:
    base = spec(nfs={"server": "10.0.0.2", "path": "/m"})
    other_storage = spec(nfs={"server": "10.0.0.3", "path": "/n"})
    moved = base.model_copy(deep=True)
    assert moved.source.huggingface is not None
    moved.source.huggingface.revision = "v2"
    assert naming.source_fingerprint(base, None) == naming.source_fingerprint(other_storage, None)
    assert naming.source_fingerprint(base, None) != naming.source_fingerprint(moved, None)
    assert naming.source_fingerprint(base, None) != naming.source_fingerprint(base, "retry-1")


def test_ossfs2_pv_matches_the_ack_guide() -> None:
    pv = storage.persistent_volume(BODY, spec(ossfs2=OSS))
    assert pv is not None
    csi = pv["spec"]["csi"]
    assert csi["driver"] == "ossplugin.csi.alibabacloud.com"
    assert csi["volumeHandle"] == pv["metadata"]["name"]  # the guide: volumeHandle equals the PV name
    assert csi["volumeAttributes"] == {"fuseType": "ossfs2", "bucket": "oss-models", "path": "/models/qwen",
                                       "url": OSS["url"], "otherOpts": OSS["otherOpts"], "authType": "rrsa",
                                       "roleName": "role"}
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["spec"]["storageClassName"] == ""
    assert pv["spec"]["claimRef"]["name"] == naming.pvc_name("qwen")


def test_ossfs2_secret_auth_uses_node_publish_secret() -> None:
    oss = {**OSS, "authType": "secret", "secretRef": {"name": "oss-ak"}}
    oss.pop("roleName")
    pv = storage.persistent_volume(BODY, spec(ossfs2=oss))
    assert pv is not None
    assert pv["spec"]["csi"]["nodePublishSecretRef"] == {"name": "oss-ak", "namespace": "llm"}
    assert "authType" not in pv["spec"]["csi"]["volumeAttributes"]


@pytest.mark.parametrize(("efs", "handle"), [
    ({"fileSystemId": "fs-0123456789abcdef0"}, "fs-0123456789abcdef0"),
    ({"fileSystemId": "fs-0123456789abcdef0", "path": "/m"}, "fs-0123456789abcdef0:/m"),
    ({"fileSystemId": "fs-0123456789abcdef0", "accessPointId": "fsap-0123456789abcdef0"},
     "fs-0123456789abcdef0::fsap-0123456789abcdef0"),
])
def test_efs_volume_handle(efs: dict[str, str], handle: str) -> None:
    pv = storage.persistent_volume(BODY, spec(efs=efs))
    assert pv is not None and pv["spec"]["csi"] == {"driver": "efs.csi.aws.com", "volumeHandle": handle}


def test_storage_class_backend_has_no_pv_and_a_dynamic_claim() -> None:
    cache = spec(storageClass={"name": "rwx"})
    assert storage.persistent_volume(BODY, cache) is None
    pvc = storage.persistent_volume_claim(BODY, cache)
    assert pvc["spec"]["storageClassName"] == "rwx" and "volumeName" not in pvc["spec"]
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "1234"


def test_download_job_carries_the_token_only_by_reference() -> None:
    job = jobs.download_job(BODY, spec(nfs={"server": "10.0.0.2", "path": "/m"}), "mc-dl-qwen-1", "img:1")
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MC_HUB_TOKEN"] == {"name": "MC_HUB_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "hf-token", "key": "HF_TOKEN"}}}
    assert env["MC_ENDPOINT"]["value"] == "https://hf-mirror.example"
    assert json.loads(env["MC_ALLOW_PATTERNS"]["value"]) == ["*.safetensors"]
    assert env["MC_JOB_NAME"]["value"] == "mc-dl-qwen-1"
    assert not any("gpu" in key for key in json.dumps(container["resources"]).split('"'))
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and 11 in rules[0]["onExitCodes"]["values"]
    assert 75 not in rules[0]["onExitCodes"]["values"]  # network errors are retried
    assert container["securityContext"]["runAsNonRoot"] is True
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_downloader_role_is_limited_to_its_own_cache_status() -> None:
    _, role, binding = jobs.downloader_rbac(BODY)
    assert role["rules"] == [{"apiGroups": ["modelcache.dev"], "resources": ["modelcaches/status"],
                              "resourceNames": ["qwen"], "verbs": ["get", "patch"]}]
    assert binding["subjects"][0]["name"] == naming.downloader_identity_name("qwen")


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


def test_crd_schema_is_structural() -> None:
    definition = crd.custom_resource_definition()
    schema = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node
    spec_schema = schema["properties"]["spec"]
    assert spec_schema["required"] == ["source", "storage"]
    assert spec_schema["properties"]["download"]["properties"]["maxWorkers"]["default"] == 8
    names = [c["name"] for c in definition["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert names == ["Model", "Revision", "Phase", "Progress", "Size", "Age"]
    assert definition["spec"]["names"]["shortNames"] == ["mc"]


def test_hostpath_download_job_hands_the_volume_root_to_the_downloader_user() -> None:
    job = jobs.download_job(BODY, spec(hostPath={"path": "/var/lib/models"}), "mc-dl-qwen-1", "img:1")
    init = job["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["volume-permissions"]
    assert init[0]["command"] == ["chown", "65532:65532", "/cache"]  # the volume root only, not recursive
    assert init[0]["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    nfs_job = jobs.download_job(BODY, spec(nfs={"server": "10.0.0.2", "path": "/m"}), "mc-dl-qwen-1", "img:1")
    assert nfs_job["spec"]["template"]["spec"]["initContainers"] == []
