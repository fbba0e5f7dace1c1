"""A ModelCache's status as a pure function of its store, its claim and the ModelDownload it wants.

The revision pods get (`resolvedRevision`, `revisionPath`) moves only when a download publishes: during a
revision change it keeps naming the complete old revision, while `download` and `pendingRevisionPath`
describe the new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import v1alpha2 as api
from .layout import Placement
from .status import (
    DOWNLOADED,
    READY,
    SERVED_FIELDS,
    STORAGE_READY,
    ConditionValue,
    condition,
    human_bytes,
    progress,
)
from .upstream import SOURCE_UPDATED, source_updated


@dataclass(frozen=True)
class CacheObservation:
    generation: int
    previous: dict[str, Any] = field(default_factory=dict)
    invalid_spec: str | None = None
    store_problem: tuple[str, str] | None = None  # (reason, message)
    model: str | None = None
    store: str | None = None
    placement: Placement | None = None
    pv_name: str | None = None
    pvc_name: str | None = None
    pvc_phase: str | None = None
    download_ref: api.DownloadRef | None = None
    download: dict[str, Any] | None = None  # the ModelDownload's status, None while it does not exist
    deleting: bool = False
    compile_cache: api.CompileCacheStatus | None = None  # the namespace's compile claim, when the store has one


@dataclass(frozen=True)
class _Verdict:
    phase: api.Phase
    storage: ConditionValue
    downloaded: ConditionValue
    ready: ConditionValue


def _storage_condition(obs: CacheObservation) -> ConditionValue:
    if obs.pvc_phase == "Bound":
        return "True", "PVCBound", f"PersistentVolumeClaim {obs.pvc_name} is Bound"
    if obs.pvc_phase is None:
        return "False", "PVCMissing", f"PersistentVolumeClaim {obs.pvc_name} does not exist yet"
    return "False", "PVCNotBound", f"PersistentVolumeClaim {obs.pvc_name} is {obs.pvc_phase}"


def _downloaded(obs: CacheObservation) -> tuple[api.Phase, ConditionValue]:
    ref = obs.download_ref
    if obs.download is None or ref is None:
        name = f"{ref.namespace}/{ref.name}" if ref else "?"
        return "Downloading", ("False", "DownloadPending", f"ModelDownload {name} is being created")
    status = api.ModelDownloadStatus.from_api(obs.download)
    theirs = next((c for c in status.conditions or [] if c.type == DOWNLOADED), None)
    if theirs is None:
        return "Downloading", ("False", "DownloadPending", f"ModelDownload {ref.name} has not started")
    shared = f" (shared, requested by {ref.requestedBy})" if ref.shared else ""
    return status.phase or "Downloading", (theirs.status, theirs.reason, theirs.message + shared)


def _verdict(obs: CacheObservation) -> _Verdict:
    storage = _storage_condition(obs)
    if obs.invalid_spec:
        failed = ("False", "InvalidSpec", obs.invalid_spec)
        return _Verdict("Failed", failed, failed, failed)
    if obs.deleting:
        deleting = ("False", "Deleting", "removing this namespace's PersistentVolume and claim; the files stay "
                                         "for the store's retention policy")
        return _Verdict("Deleting", storage, ("Unknown", "Deleting", "the cache is being deleted"), deleting)
    if obs.store_problem:
        blocked = ("False", *obs.store_problem)
        return _Verdict("Pending", blocked, blocked, blocked)
    if storage[0] != "True":
        return _Verdict("Provisioning", storage, ("False", "WaitingForStorage", storage[2]),
                        ("False", storage[1], storage[2]))
    phase, downloaded = _downloaded(obs)
    if phase == "Ready":
        return _Verdict(phase, storage, downloaded, ("True", "Ready", "the model is downloaded, verified and "
                                                                      "ready to mount"))
    served = obs.previous.get("resolvedRevision")
    message = downloaded[2] + (f"; new pods get the published revision {served}" if served else "")
    return _Verdict(phase, storage, downloaded, ("False", downloaded[1], message))


def _served(obs: CacheObservation, report: api.DownloadReport | None) -> dict[str, Any]:
    if report is None or report.state != "Published" or not report.resolvedRevision or obs.placement is None:
        return {k: obs.previous[k] for k in SERVED_FIELDS if obs.previous.get(k) is not None}
    return {
        "resolvedRevision": report.resolvedRevision,
        "revisionPath": obs.placement.serving_path(report.resolvedRevision),
        "servedFrom": obs.download_ref.model_dump() if obs.download_ref else None,
        "sizeBytes": report.bytesTotal,
        "size": human_bytes(report.bytesTotal),
        "fileCount": report.filesTotal,
        "format": report.format,
    }


def _source_updated(obs: CacheObservation) -> ConditionValue | None:
    """Whether the branch or tag this cache's download pinned has moved upstream since (see upstream.py)."""
    if obs.download is None or obs.invalid_spec or obs.deleting:
        return None
    status = api.ModelDownloadStatus.from_api(obs.download)
    requested = status.download.requestedRevision if status.download else None
    return source_updated(requested or "the revision", status.resolvedRevision, status.upstream)


def cache_status(obs: CacheObservation, now: str) -> dict[str, Any]:
    """The status to write. Unchanged inputs give an identical dict, so callers can skip equal writes."""
    result = _verdict(obs)
    previous_conditions: list[dict[str, Any]] = obs.previous.get("conditions") or []
    raw_report = (obs.download or {}).get("download")
    report = api.DownloadReport.from_api(raw_report) if raw_report else None
    status: dict[str, Any] = {
        "phase": result.phase,
        "observedGeneration": obs.generation,
        "conditions": [
            condition(STORAGE_READY, result.storage, obs.generation, now, previous_conditions),
            condition(DOWNLOADED, result.downloaded, obs.generation, now, previous_conditions),
            condition(READY, result.ready, obs.generation, now, previous_conditions),
        ],
        "model": obs.model,
        "store": obs.store,
        "pvName": obs.pv_name,
        "pvcName": obs.pvc_name,
        "downloadRef": obs.download_ref.model_dump() if obs.download_ref else None,
        "compileCache": obs.compile_cache.model_dump() if obs.compile_cache else None,
        **_served(obs, report),
    }
    updated = _source_updated(obs)
    if updated is not None:
        status["conditions"].append(condition(SOURCE_UPDATED, updated, obs.generation, now, previous_conditions))
    if report is not None:
        status["download"] = report.model_dump(mode="json", exclude_none=True)
        status["progress"] = progress(report)
        if report.resolvedRevision and report.state != "Published" and obs.placement is not None:
            status["pendingRevisionPath"] = obs.placement.serving_path(report.resolvedRevision)
    elif obs.previous.get("progress") is not None:
        status["progress"] = obs.previous["progress"]
    return {k: v for k, v in status.items() if v is not None}
