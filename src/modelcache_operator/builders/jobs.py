"""The download Job, its least-privilege identity, and the cleanup Job."""

from __future__ import annotations

import json
from typing import Any

from ..api import v1alpha1 as api
from ..downloader.errors import NON_RETRYABLE_EXIT_CODES
from . import naming

CACHE_MOUNT = "/cache"
TOKEN_ENV = "MC_HUB_TOKEN"  # noqa: S105 - the variable name, filled by secretKeyRef
DOWNLOADER_CONTAINER = "downloader"

RESTRICTED_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# The image's non-root user; fsGroup makes fresh volumes writable for it.
RUN_AS_USER = 65532


def hub_and_source(spec: api.ModelCacheSpec) -> tuple[str, str, api.HubSourceFields, str]:
    if spec.source.huggingface:
        hf = spec.source.huggingface
        return "huggingface", hf.repo, hf, hf.revision
    assert spec.source.modelscope is not None  # guaranteed by the CRD's exactly-one rule
    ms = spec.source.modelscope
    return "modelscope", ms.model, ms, ms.revision


def model_label(spec: api.ModelCacheSpec) -> str:
    hub, repo, _, _ = hub_and_source(spec)
    return f"{'hf' if hub == 'huggingface' else 'ms'}:{repo}"


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def downloader_env(namespace: str, cache: str, job_name: str, spec: api.ModelCacheSpec) -> list[dict[str, Any]]:
    hub, repo, source, revision = hub_and_source(spec)
    env = [
        _env("MC_HUB", hub),
        _env("MC_REPO", repo),
        _env("MC_REVISION", revision),
        _env("MC_ROOT", CACHE_MOUNT),
        _env("MC_MAX_WORKERS", str(spec.download.maxWorkers)),
        _env("MC_CACHE_NAMESPACE", namespace),
        _env("MC_CACHE_NAME", cache),
        _env("MC_JOB_NAME", job_name),
        _env("MC_REPORT", "kubernetes"),
        _env("HF_HOME", "/tmp/hf-home"),
        _env("MODELSCOPE_CACHE", "/tmp/modelscope"),
        # Names the lock holder on the volume, so a stale lock says which pod left it.
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if source.allowPatterns:
        env.append(_env("MC_ALLOW_PATTERNS", json.dumps(source.allowPatterns)))
    if source.ignorePatterns:
        env.append(_env("MC_IGNORE_PATTERNS", json.dumps(source.ignorePatterns)))
    if source.endpoint:
        env.append(_env("MC_ENDPOINT", source.endpoint))
    if source.tokenSecretRef:
        # The token reaches the pod only by reference: it never appears in the Job spec.
        env.append({"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {
            "name": source.tokenSecretRef.name, "key": source.tokenSecretRef.key}}})
    return env


def downloader_rbac(cache_body: dict[str, Any]) -> list[dict[str, Any]]:
    """A ServiceAccount per cache, allowed only to report on its own ModelCache's status."""
    namespace, cache = cache_body["metadata"]["namespace"], cache_body["metadata"]["name"]
    name = naming.downloader_identity_name(cache)
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": naming.child_labels(namespace, cache, "downloader"),
        "ownerReferences": [naming.owner_reference(cache_body)],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata, "rules": [
            {"apiGroups": [api.GROUP], "resources": [f"{api.PLURAL}/status"], "resourceNames": [cache],
             "verbs": ["get", "patch"]},
        ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": metadata,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]


def _pod_scheduling(spec: api.ModelCacheSpec) -> dict[str, Any]:
    scheduling: dict[str, Any] = {}
    if spec.download.nodeSelector:
        scheduling["nodeSelector"] = spec.download.nodeSelector
    if spec.download.tolerations:
        scheduling["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.download.tolerations]
    return scheduling


def _resources(spec: api.ModelCacheSpec) -> dict[str, Any]:
    if spec.download.resources:
        return spec.download.resources.model_dump(exclude_none=True)
    return {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def volume_permissions(spec: api.ModelCacheSpec, image: str) -> list[dict[str, Any]]:
    """hostPath volumes get no fsGroup, and the kubelet creates the directory root-owned: hand the volume
    root (only it, not recursively) to the image's user first, with CAP_CHOWN and nothing else."""
    if spec.storage.hostPath is None:
        return []
    return [{
        "name": "volume-permissions",
        "image": spec.download.image or image,
        "command": ["chown", f"{RUN_AS_USER}:{RUN_AS_USER}", CACHE_MOUNT],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": {**RESTRICTED_SECURITY_CONTEXT, "runAsUser": 0, "runAsNonRoot": False,
                            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}},
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_MOUNT}],
    }]


def download_job(cache_body: dict[str, Any], spec: api.ModelCacheSpec, job_name: str, image: str) -> dict[str, Any]:
    namespace, cache = cache_body["metadata"]["namespace"], cache_body["metadata"]["name"]
    labels = naming.child_labels(namespace, cache, "downloader")
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": naming.downloader_identity_name(cache),
        "securityContext": {"runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER,
                            "fsGroupChangePolicy": "OnRootMismatch", "runAsNonRoot": True},
        "initContainers": volume_permissions(spec, image),
        "containers": [{
            "name": DOWNLOADER_CONTAINER,
            "image": spec.download.image or image,
            "command": ["modelcache-download"],
            "env": downloader_env(namespace, cache, job_name, spec),
            "resources": _resources(spec),
            "securityContext": RESTRICTED_SECURITY_CONTEXT,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "cache", "mountPath": CACHE_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [
            {"name": "cache", "persistentVolumeClaim": {"claimName": naming.pvc_name(cache)}},
            {"name": "tmp", "emptyDir": {}},
        ],
        **_pod_scheduling(spec),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name, "namespace": namespace, "labels": labels,
                     "ownerReferences": [naming.owner_reference(cache_body)]},
        "spec": {
            "backoffLimit": spec.download.backoffLimit,
            "activeDeadlineSeconds": spec.download.activeDeadlineSeconds,
            "podFailurePolicy": {"rules": [
                # Unauthorized, NotFound, ... : fail at once, a retry cannot fix them (downloader/errors.py).
                {"action": "FailJob", "onExitCodes": {"containerName": DOWNLOADER_CONTAINER, "operator": "In",
                                                      "values": list(NON_RETRYABLE_EXIT_CODES)}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def cleanup_job(cache_body: dict[str, Any], image: str) -> dict[str, Any]:
    """Removes every file of the cache from the volume before the PV/PVC go (reclaimPolicy Delete)."""
    namespace, cache = cache_body["metadata"]["namespace"], cache_body["metadata"]["name"]
    labels = naming.child_labels(namespace, cache, "cleanup")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": naming.cleanup_job_name(cache), "namespace": namespace, "labels": labels,
                     "ownerReferences": [naming.owner_reference(cache_body)]},
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 3600,
            "template": {"metadata": {"labels": labels}, "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "runAsNonRoot": True},
                "containers": [{
                    "name": "cleanup",
                    "image": image,
                    "command": ["modelcache-operator", "purge", "--root", CACHE_MOUNT],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                    "securityContext": RESTRICTED_SECURITY_CONTEXT,
                    "volumeMounts": [{"name": "cache", "mountPath": CACHE_MOUNT}],
                }],
                "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": naming.pvc_name(cache)}}],
            }},
        },
    }
