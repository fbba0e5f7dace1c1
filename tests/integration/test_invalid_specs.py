"""Bad input is refused at apply time by the apiserver (schema + CEL) with a message naming the field,
and nothing is created for it."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.kube import Cluster
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration

VALID: dict[str, Any] = {
    "source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B", "revision": "main"}},
    "storage": {"nfs": {"server": "10.0.0.2", "path": "/exports/models"}, "capacity": "10Gi"},
}
OSS = {"bucket": "oss-models", "path": "/models/x", "url": "http://oss-cn-hangzhou-internal.aliyuncs.com",
       "roleName": "demo-role"}


def with_changes(path: str, value: Any) -> dict[str, Any]:
    """VALID with the dotted `path` set to value (None deletes it)."""
    spec = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return spec


def storage(**backend: Any) -> dict[str, Any]:
    return {**backend, "capacity": "10Gi"}


# (case id, spec, text the apiserver's message must contain: the field path)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no-source", with_changes("source", None), "spec.source"),
    ("two-sources", with_changes("source.modelscope", {"model": "Qwen/Qwen3-8B"}), "spec.source"),
    ("empty-source", with_changes("source", {}), "spec.source"),
    ("no-storage", with_changes("storage", None), "spec.storage"),
    ("no-backend", with_changes("storage", {"capacity": "10Gi"}), "spec.storage"),
    ("two-backends", with_changes("storage.hostPath", {"path": "/data"}), "spec.storage"),
    ("repo-without-owner", with_changes("source.huggingface.repo", "qwen"), "spec.source.huggingface.repo"),
    ("repo-traversal", with_changes("source.huggingface.repo", "../etc/passwd"), "spec.source.huggingface.repo"),
    ("repo-with-space", with_changes("source.huggingface.repo", "Qwen/Qwen 3"), "spec.source.huggingface.repo"),
    ("revision-with-space", with_changes("source.huggingface.revision", "main branch"),
     "spec.source.huggingface.revision"),
    ("endpoint-not-http", with_changes("source.huggingface.endpoint", "ftp://mirror"),
     "spec.source.huggingface.endpoint"),
    ("token-secret-bad-name", with_changes("source.huggingface.tokenSecretRef", {"name": "HF_Token"}),
     "spec.source.huggingface.tokenSecretRef.name"),
    ("token-secret-bad-key", with_changes("source.huggingface.tokenSecretRef", {"name": "hf", "key": "a/b"}),
     "spec.source.huggingface.tokenSecretRef.key"),
    ("modelscope-bad-model", with_changes("source", {"modelscope": {"model": "no-owner"}}),
     "spec.source.modelscope.model"),
    ("ossfs2-no-bucket", with_changes("storage", storage(ossfs2={k: v for k, v in OSS.items() if k != "bucket"})),
     "spec.storage.ossfs2.bucket"),
    ("ossfs2-uppercase-bucket", with_changes("storage", storage(ossfs2={**OSS, "bucket": "Models"})),
     "spec.storage.ossfs2.bucket"),
    ("ossfs2-rrsa-without-role", with_changes("storage", storage(ossfs2={k: v for k, v in OSS.items()
                                                                           if k != "roleName"})),
     "spec.storage.ossfs2.roleName"),
    ("ossfs2-secret-without-ref", with_changes("storage", storage(ossfs2={**OSS, "authType": "secret"})),
     "spec.storage.ossfs2.secretRef"),
    ("ossfs2-relative-path", with_changes("storage", storage(ossfs2={**OSS, "path": "models/x"})),
     "spec.storage.ossfs2.path"),
    ("ossfs2-dotdot-path", with_changes("storage", storage(ossfs2={**OSS, "path": "/models/../etc"})),
     "spec.storage.ossfs2.path"),
    ("ossfs2-shell-in-opts", with_changes("storage", storage(ossfs2={**OSS, "otherOpts": "-o x; rm -rf /"})),
     "spec.storage.ossfs2.otherOpts"),
    ("nfs-relative-path", with_changes("storage.nfs.path", "exports"), "spec.storage.nfs.path"),
    ("nfs-no-server", with_changes("storage.nfs.server", None), "spec.storage.nfs.server"),
    ("efs-bad-id", with_changes("storage", storage(efs={"fileSystemId": "fs-XYZ"})),
     "spec.storage.efs.fileSystemId"),
    ("efs-bad-access-point", with_changes("storage", storage(efs={"fileSystemId": "fs-0123456789abcdef0",
                                                                  "accessPointId": "ap-1"})),
     "spec.storage.efs.accessPointId"),
    ("storageclass-bad-name", with_changes("storage", storage(storageClass={"name": "Fast_RWX"})),
     "spec.storage.storageClass.name"),
    ("hostpath-relative", with_changes("storage", storage(hostPath={"path": "data"})),
     "spec.storage.hostPath.path"),
    ("capacity-not-quantity", with_changes("storage.capacity", "lots"), "spec.storage.capacity"),
    ("capacity-negative", with_changes("storage.capacity", "-5Gi"), "spec.storage.capacity"),
    ("reclaim-recycle", with_changes("storage.reclaimPolicy", "Recycle"), "spec.storage.reclaimPolicy"),
    ("workers-zero", with_changes("download.maxWorkers", 0), "spec.download.maxWorkers"),
    ("workers-huge", with_changes("download.maxWorkers", 1000), "spec.download.maxWorkers"),
    ("backoff-negative", with_changes("download.backoffLimit", -1), "spec.download.backoffLimit"),
    ("deadline-too-short", with_changes("download.activeDeadlineSeconds", 5),
     "spec.download.activeDeadlineSeconds"),
    ("download-asks-gpu", with_changes("download.resources", {"limits": {"nvidia.com/gpu": "1"}}),
     "spec.download.resources.limits"),
    ("download-bad-quantity", with_changes("download.resources", {"requests": {"cpu": "lots"}}),
     "spec.download.resources.requests"),
    ("prewarm-bad-mode", with_changes("prewarm.mode", "sometimes"), "spec.prewarm.mode"),
    ("prewarm-zero-concurrency", with_changes("prewarm.concurrency", 0), "spec.prewarm.concurrency"),
    ("serving-bad-policy", with_changes("serving.notReadyPolicy", "maybe"), "spec.serving.notReadyPolicy"),
    ("serving-relative-mount", with_changes("serving.mountPath", "models"), "spec.serving.mountPath"),
]


def test_at_least_25_cases() -> None:
    assert len(INVALID) >= 25


@pytest.mark.parametrize(("case", "spec", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_is_refused_naming_the_field(case: str, spec: dict[str, Any], field: str, k8s: Cluster,
                                                  namespace: str, operator: OperatorProcess) -> None:
    manifest = {"apiVersion": "modelcache.dev/v1alpha1", "kind": "ModelCache", "metadata": {"name": case},
                "spec": spec}
    with pytest.raises(ApiException) as refused:
        k8s.create_cache(namespace, manifest)
    assert refused.value.status in (400, 422), refused.value.body
    assert field in refused.value.body, f"message does not name {field}: {refused.value.body}"
    assert k8s.get_cache(namespace, case) is None
    assert k8s.core.list_namespaced_persistent_volume_claim(namespace).items == []
    assert k8s.batch.list_namespaced_job(namespace).items == []


def test_storage_is_immutable(k8s: Cluster, namespace: str, operator: OperatorProcess) -> None:
    spec = with_changes("storage.nfs.path", f"/exports/immutable-{uuid.uuid4().hex}")  # never clashes with others
    k8s.create_cache(namespace, {"apiVersion": "modelcache.dev/v1alpha1", "kind": "ModelCache",
                                 "metadata": {"name": "fixed"}, "spec": spec})
    with pytest.raises(ApiException) as refused:
        k8s.patch_cache(namespace, "fixed", {"spec": {"storage": {"nfs": {"path": "/elsewhere"}}}})
    assert refused.value.status == 422
    assert "spec.storage" in refused.value.body and "immutable" in refused.value.body


def test_validated_spec_matches_the_pydantic_model() -> None:
    """The Python models reject every case too, so the reconciler's own guard agrees with the CRD."""
    from pydantic import ValidationError

    from modelcache_operator.api.v1alpha1 import ModelCacheSpec

    accepted_by_python = []
    for case, spec, _ in INVALID:
        try:
            ModelCacheSpec.model_validate(spec)
        except ValidationError:
            continue
        accepted_by_python.append(case)
    # CEL-only rules (exactly-one, quantities, path segments, GPU keys, immutability) are the apiserver's job.
    assert set(accepted_by_python) <= {
        "two-sources", "empty-source", "no-backend", "two-backends", "ossfs2-rrsa-without-role",
        "ossfs2-secret-without-ref", "ossfs2-dotdot-path", "capacity-not-quantity", "capacity-negative",
        "download-asks-gpu", "download-bad-quantity"}
