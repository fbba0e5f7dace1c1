"""The download Job, its least-privilege identity, and the Job that removes a collected revision folder."""

from __future__ import annotations

import json
from typing import Any

from ..api import v1alpha2 as api
from ..downloader.errors import NON_RETRYABLE_EXIT_CODES
from . import layout, naming

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
# Finished Jobs go after this long (their outcome is in the ModelDownload's status by then): long enough to
# read a failed pod's logs, and no finished Job and pod per download piling up in the namespace.
FINISHED_JOB_TTL_SECONDS = 3600


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def token_ref(spec: api.ModelDownloadSpec, store: api.ModelStoreSpec) -> api.SecretKeyRef | None:
    """A private download's own token (in its namespace), else the store's credential for the hub (in the
    operator's namespace, where shared downloads run)."""
    key = layout.source_key(spec.source)
    if key.fields.tokenSecretRef:
        return key.fields.tokenSecretRef
    credentials = store.hubCredentials
    ref = getattr(credentials, key.hub) if credentials else None
    return api.SecretKeyRef(name=ref.name, key=ref.key) if ref else None


def downloader_env(namespace: str, download: str, job_name: str, spec: api.ModelDownloadSpec,
                   store: api.ModelStoreSpec, *, pinned: str | None = None) -> list[dict[str, Any]]:
    key = layout.source_key(spec.source)
    # The commit an earlier Job of this download resolved the revision to: fetched again, never re-resolved.
    pin = [] if pinned is None else [_env("MC_PINNED_REVISION", pinned)]
    env = [*pin,
        _env("MC_HUB", key.hub),
        _env("MC_REPO", key.repo),
        _env("MC_REVISION", key.revision),
        _env("MC_ROOT", CACHE_MOUNT),
        _env("MC_MAX_WORKERS", str(spec.download.maxWorkers)),
        _env("MC_DOWNLOAD_NAMESPACE", namespace),
        _env("MC_DOWNLOAD_NAME", download),
        _env("MC_JOB_NAME", job_name),
        _env("MC_REPORT", "kubernetes"),
        _env("HF_HOME", "/tmp/hf-home"),
        _env("MODELSCOPE_CACHE", "/tmp/modelscope"),
        # Names the lock holder on the volume, so a stale lock says which pod left it.
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if key.fields.allowPatterns:
        env.append(_env("MC_ALLOW_PATTERNS", json.dumps(key.fields.allowPatterns)))
    if key.fields.ignorePatterns:
        env.append(_env("MC_IGNORE_PATTERNS", json.dumps(key.fields.ignorePatterns)))
    if key.fields.endpoint:
        env.append(_env("MC_ENDPOINT", key.fields.endpoint))
    token = token_ref(spec, store)
    if token:
        # The token reaches the pod only by reference: it never appears in the Job spec.
        env.append({"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}})
    return env


def downloader_rbac(download_body: dict[str, Any]) -> list[dict[str, Any]]:
    """A ServiceAccount per download, allowed only to report on its own ModelDownload's status."""
    namespace, download = download_body["metadata"]["namespace"], download_body["metadata"]["name"]
    name = naming.downloader_identity_name(download)
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": naming.child_labels("downloader", download=download),
        "ownerReferences": [naming.owner_reference(download_body)],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata, "rules": [
            {"apiGroups": [api.GROUP], "resources": [f"{api.DOWNLOAD_PLURAL}/status"], "resourceNames": [download],
             "verbs": ["get", "patch"]},
        ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": metadata,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]


def _pod_scheduling(spec: api.ModelDownloadSpec) -> dict[str, Any]:
    scheduling: dict[str, Any] = {}
    if spec.download.nodeSelector:
        scheduling["nodeSelector"] = spec.download.nodeSelector
    if spec.download.tolerations:
        scheduling["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.download.tolerations]
    return scheduling


def _resources(spec: api.ModelDownloadSpec) -> dict[str, Any]:
    if spec.download.resources:
        return spec.download.resources.model_dump(exclude_none=True)
    return {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def volume_permissions(store: api.ModelStoreSpec, image: str) -> list[dict[str, Any]]:
    """hostPath volumes get no fsGroup, and the kubelet creates the folder root-owned: hand the folder (only
    it, not recursively) to the image's user first, with CAP_CHOWN and nothing else."""
    if store.hostPath is None:
        return []
    return [{
        "name": "volume-permissions",
        "image": image,
        "command": ["chown", f"{RUN_AS_USER}:{RUN_AS_USER}", CACHE_MOUNT],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": {**RESTRICTED_SECURITY_CONTEXT, "runAsUser": 0, "runAsNonRoot": False,
                            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}},
    }]


def download_job(download_body: dict[str, Any], spec: api.ModelDownloadSpec, store: api.ModelStoreSpec,
                 image: str, quota_free_bytes: int | None = None, *, pinned: str | None = None) -> dict[str, Any]:
    """The Job that fills `spec.folder` of `spec.claimName`: it mounts only that folder, so even its own
    process cannot write elsewhere on the store. `pinned`: the commit this download's status recorded."""
    namespace, download = download_body["metadata"]["namespace"], download_body["metadata"]["name"]
    job_name = naming.download_job_name(download)
    labels = naming.child_labels("downloader", download=download, store=spec.store)
    cache_mount = {"name": "cache", "mountPath": CACHE_MOUNT, "subPath": spec.folder}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": naming.downloader_identity_name(download),
        "securityContext": {"runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER,
                            "fsGroupChangePolicy": "OnRootMismatch", "runAsNonRoot": True},
        "initContainers": [{**c, "volumeMounts": [cache_mount]} for c in volume_permissions(store, image)],
        "containers": [{
            "name": DOWNLOADER_CONTAINER,
            "image": image,
            "command": ["modelcache-download"],
            "env": downloader_env(namespace, download, job_name, spec, store, pinned=pinned) + (
                [] if quota_free_bytes is None else [_env("MC_QUOTA_FREE_BYTES", str(quota_free_bytes))]),
            "resources": _resources(spec),
            "securityContext": RESTRICTED_SECURITY_CONTEXT,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [cache_mount, {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [
            {"name": "cache", "persistentVolumeClaim": {"claimName": spec.claimName}},
            {"name": "tmp", "emptyDir": {}},
        ],
        **_pod_scheduling(spec),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name, "namespace": namespace, "labels": labels,
                     "ownerReferences": [naming.owner_reference(download_body)]},
        "spec": {
            "backoffLimit": spec.download.backoffLimit,
            "activeDeadlineSeconds": spec.download.activeDeadlineSeconds,
            "ttlSecondsAfterFinished": FINISHED_JOB_TTL_SECONDS,
            # One writer per folder inside the cluster: a replacement pod is created only once the previous
            # one is terminal (Failed), never while it is still terminating and may write.
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": {"rules": [
                # Unauthorized, NotFound, ... : fail at once, a retry cannot fix them (downloader/errors.py).
                {"action": "FailJob", "onExitCodes": {"containerName": DOWNLOADER_CONTAINER, "operator": "In",
                                                      "values": list(NON_RETRYABLE_EXIT_CODES)}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def cleanup_job(download_body: dict[str, Any], spec: api.ModelDownloadSpec, revision: str,
                image: str) -> dict[str, Any]:
    """Removes one revision folder: mounts the download's folder (never more) and deletes `<revision>` in it."""
    namespace, download = download_body["metadata"]["namespace"], download_body["metadata"]["name"]
    labels = naming.child_labels("cleanup", download=download, store=spec.store)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": naming.cleanup_job_name(download), "namespace": namespace, "labels": labels,
                     "ownerReferences": [naming.owner_reference(download_body)]},
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": FINISHED_JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "runAsNonRoot": True},
                "containers": [{
                    "name": "cleanup",
                    "image": image,
                    "command": ["modelcache-operator", "purge", "--root", CACHE_MOUNT, "--entry", revision],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                    "securityContext": RESTRICTED_SECURITY_CONTEXT,
                    "volumeMounts": [{"name": "cache", "mountPath": CACHE_MOUNT, "subPath": spec.folder}],
                }],
                "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": spec.claimName}}],
                # Where the download ran: a node-local store is only reachable there.
                **_pod_scheduling(spec),
            }},
        },
    }
