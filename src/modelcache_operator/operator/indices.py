"""kopf indices: what the watches know, so reconciles need no reads. Imported by handlers.py, which
registers them with kopf; each reconcile's view is cut from these (observe.py)."""

from __future__ import annotations

from typing import Any

import kopf

from ..api import v1alpha2 as api
from ..api.names import LABEL_DOWNLOAD, LABEL_INJECT, LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY
from ..builders.gates import gated_caches
from ..builders.pins import pinned_downloads
from ..builders.status import JobObservation, container_config_error
from ..builders.upstream import CHECK_ROLE
from .views import StoreEntry

MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}
# kopf types namespace as optional.
IndexKey = tuple[str | None, str]

def _job_observation(name: str, uid: str, status: dict[str, Any]) -> JobObservation:
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed")
    return JobObservation(
        name=name,
        uid=uid,
        started=status.get("startTime"),
        finished=(failed or {}).get("lastTransitionTime") or status.get("completionTime"),
        active=bool(status.get("active")),
        succeeded="Complete" in conditions,
        failed=failed is not None,
        failure_reason=failed.get("reason") if failed else None,
        failure_message=failed.get("message") if failed else None,
    )


@kopf.index("batch", "v1", "jobs", labels={**MANAGED, LABEL_ROLE: "downloader"})
async def job_index(namespace: str | None, name: str, uid: str, labels: kopf.Labels, status: kopf.Status,
                    **_: Any) -> dict[IndexKey, JobObservation]:
    return {(namespace, labels.get(LABEL_DOWNLOAD, "")): _job_observation(name, uid, dict(status))}


@kopf.index("batch", "v1", "jobs", labels={**MANAGED, LABEL_ROLE: "cleanup"})
async def cleanup_index(namespace: str | None, name: str, uid: str, labels: kopf.Labels, status: kopf.Status,
                        **_: Any) -> dict[IndexKey, JobObservation]:
    return {(namespace, labels.get(LABEL_DOWNLOAD, "")): _job_observation(name, uid, dict(status))}


@kopf.index("batch", "v1", "jobs", labels={**MANAGED, LABEL_ROLE: CHECK_ROLE})
async def check_index(namespace: str | None, name: str, uid: str, labels: kopf.Labels, status: kopf.Status,
                      **_: Any) -> dict[IndexKey, JobObservation]:
    """Upstream-check Jobs (builders/upstream.py), by download: one per check round while it exists."""
    return {(namespace, labels.get(LABEL_DOWNLOAD, "")): _job_observation(name, uid, dict(status))}


@kopf.index("", "v1", "persistentvolumeclaims", labels=MANAGED)
async def pvc_index(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[IndexKey, str]:
    return {(namespace, name): str(status.get("phase", "Pending"))}


@kopf.index("", "v1", "pods", labels={**MANAGED, LABEL_ROLE: "downloader"})
async def termination_index(namespace: str | None, labels: kopf.Labels, status: kopf.Status,
                            **_: Any) -> dict[IndexKey, tuple[str, str]]:
    """The downloader writes its failure reason as JSON to the termination log: (Job name, message)."""
    for container in status.get("containerStatuses") or []:
        message = ((container.get("state") or {}).get("terminated") or {}).get("message")
        if message and "job-name" in labels:
            return {(namespace, labels.get(LABEL_DOWNLOAD, "")): (labels["job-name"], message)}
    return {}


@kopf.index("", "v1", "pods", labels={**MANAGED, LABEL_ROLE: "downloader"})
async def config_error_index(namespace: str | None, labels: kopf.Labels, status: kopf.Status,
                             **_: Any) -> dict[IndexKey, tuple[str, str]]:
    """Download pods the kubelet cannot start for a missing Secret or key: (Job name, the kubelet's message)."""
    message = container_config_error(dict(status))
    if message and "job-name" in labels:
        return {(namespace, labels.get(LABEL_DOWNLOAD, "")): (labels["job-name"], message)}
    return {}


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
async def cache_index(namespace: str | None, name: str, body: kopf.Body,
                      **_: Any) -> dict[IndexKey, dict[str, Any]]:
    return {(namespace, name): dict(body)}


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
async def caches_by_download(namespace: str | None, name: str, status: kopf.Status,
                             **_: Any) -> dict[IndexKey, IndexKey]:
    """The download a cache wants now, and the one its served revision came from."""
    refs = [status.get("downloadRef") or {}, status.get("servedFrom") or {}]
    return {(ref["namespace"], ref["name"]): (namespace, name) for ref in refs if ref.get("name")}


@kopf.index("", "v1", "pods", labels={LABEL_INJECT: "true"})
async def pods_by_download(namespace: str | None, name: str, annotations: kopf.Annotations, status: kopf.Status,
                           **_: Any) -> dict[IndexKey, str]:
    """Pods pinned to a download's revision keep its folder from garbage collection while they live."""
    if status.get("phase") in ("Succeeded", "Failed"):
        return {}
    return {tuple(ref.split("/", 1)): f"{namespace}/{name}"  # type: ignore[misc]
            for ref in pinned_downloads(annotations)}


@kopf.index("", "v1", "pods", labels={LABEL_INJECT: "true"})
async def gated_pods(namespace: str | None, body: kopf.Body, **_: Any) -> dict[IndexKey, dict[str, Any]]:
    """Pods held by one of our scheduling gates, by the cache each gate waits for."""
    return {(namespace, cache): dict(body) for cache in gated_caches(body).values()}


@kopf.index(api.GROUP, api.VERSION, api.STORE_PLURAL)
async def store_index(name: str, body: kopf.Body, **_: Any) -> dict[str, StoreEntry]:
    try:
        spec: api.ModelStoreSpec | None = api.ModelStoreSpec.from_api(dict(body.get("spec") or {}))
    except ValueError:
        spec = None
    return {name: StoreEntry(dict(body), spec)}


@kopf.index(api.GROUP, api.VERSION, api.DOWNLOAD_PLURAL)
async def download_index(namespace: str | None, name: str, body: kopf.Body,
                         **_: Any) -> dict[IndexKey, dict[str, Any]]:
    return {(namespace, name): dict(body)}


@kopf.index("", "v1", "namespaces")
async def namespace_index(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}
