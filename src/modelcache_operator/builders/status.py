"""The status of a ModelCache as a pure function of what the reconciler observed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import v1alpha1 as api

STORAGE_READY = "StorageReady"
DOWNLOADED = "Downloaded"
READY = "Ready"


@dataclass(frozen=True)
class JobObservation:
    name: str
    started: str | None = None  # RFC 3339, from the Job's status
    finished: str | None = None
    active: bool = False
    succeeded: bool = False
    failed: bool = False
    failure_reason: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class Observation:
    generation: int
    model: str | None
    pv_name: str | None
    pvc_name: str
    pvc_phase: str | None
    job_name: str
    job: JobObservation | None
    report: api.DownloadReport | None
    secret_problem: str | None = None
    invalid_spec: str | None = None
    storage_conflict: str | None = None
    deleting: bool = False
    deletion_blocked_by: list[str] = field(default_factory=list)
    previous: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    phase: api.Phase
    storage: tuple[str, str, str]
    downloaded: tuple[str, str, str]
    ready: tuple[str, str, str]


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _storage_condition(obs: Observation) -> tuple[str, str, str]:
    if obs.pvc_phase == "Bound":
        return "True", "PVCBound", f"PersistentVolumeClaim {obs.pvc_name} is Bound"
    if obs.pvc_phase is None:
        return "False", "PVCMissing", f"PersistentVolumeClaim {obs.pvc_name} does not exist yet"
    return "False", "PVCNotBound", f"PersistentVolumeClaim {obs.pvc_name} is {obs.pvc_phase}"


def _download_condition(obs: Observation) -> tuple[api.Phase, tuple[str, str, str]]:
    report, job = obs.report, obs.job
    if report and report.state == "Published":
        return "Ready", ("True", "Published", f"revision {report.resolvedRevision} published by Job {obs.job_name}")
    if job and job.failed:
        reason = (report.reason if report and report.state == "Failed" and report.reason else None) \
            or job.failure_reason or "JobFailed"
        message = (report.message if report and report.state == "Failed" and report.message else None) \
            or job.failure_message or f"download Job {obs.job_name} failed"
        return "Failed", ("False", reason, message)
    if job is None:
        return "Downloading", ("False", "JobPending", f"download Job {obs.job_name} is being created")
    if report and report.state == "Verifying":
        return "Verifying", ("False", "Verifying", "checking sizes and sha256 of the downloaded files")
    if job.succeeded:
        return "Verifying", ("False", "AwaitingReport",
                             f"Job {obs.job_name} completed; waiting for the downloader's final report")
    if report and report.state in ("Resolving", "Downloading"):
        return "Downloading", ("False", report.state, f"{_percent(report)} of {human_bytes(report.bytesTotal)}")
    return "Downloading", ("False", "JobRunning", f"download Job {obs.job_name} is running")


def verdict(obs: Observation) -> Verdict:
    storage = _storage_condition(obs)
    if obs.invalid_spec:
        failed = ("False", "InvalidSpec", obs.invalid_spec)
        return Verdict("Failed", storage, failed, failed)
    if obs.deleting:
        if obs.deletion_blocked_by:
            waiting = ("False", "InUse", "deletion waits for pods still using the cache: "
                       + ", ".join(sorted(obs.deletion_blocked_by)[:10]))
        else:
            waiting = ("False", "Deleting", "removing the cache's children")
        return Verdict("Deleting", storage, ("Unknown", "Deleting", "the cache is being deleted"), waiting)
    if obs.storage_conflict:
        clash = ("False", "StorageConflict", obs.storage_conflict)
        return Verdict("Pending", clash, clash, clash)
    if obs.secret_problem:
        blocked = ("False", "SecretNotFound", obs.secret_problem)
        return Verdict("Pending", storage, blocked, blocked)
    if storage[0] != "True":
        return Verdict("Provisioning", storage, ("False", "WaitingForStorage", storage[2]),
                       ("False", storage[1], storage[2]))
    phase, downloaded = _download_condition(obs)
    ready = ("True", "Ready", "the model is downloaded, verified and ready to mount") if phase == "Ready" \
        else ("False", downloaded[1], downloaded[2])
    return Verdict(phase, storage, downloaded, ready)


def _percent(report: api.DownloadReport) -> str:
    if report.bytesTotal <= 0:
        return "0%"
    return f"{min(100.0, 100.0 * report.bytesDone / report.bytesTotal):.0f}%"


def _condition(kind: str, value: tuple[str, str, str], generation: int, now: str,
               previous: list[dict[str, Any]]) -> dict[str, Any]:
    status, reason, message = value
    before = next((c for c in previous if c.get("type") == kind), None)
    unchanged = before is not None and before.get("status") == status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": before["lastTransitionTime"] if unchanged and before else now,
        "observedGeneration": generation,
    }


def desired_status(obs: Observation, now: str) -> dict[str, Any]:
    """The status to write. Unchanged inputs give an identical dict (apart from nothing), so callers can
    skip the write when it equals the current status."""
    result = verdict(obs)
    previous_conditions: list[dict[str, Any]] = obs.previous.get("conditions") or []
    status: dict[str, Any] = {
        "phase": result.phase,
        "observedGeneration": obs.generation,
        "conditions": [
            _condition(STORAGE_READY, result.storage, obs.generation, now, previous_conditions),
            _condition(DOWNLOADED, result.downloaded, obs.generation, now, previous_conditions),
            _condition(READY, result.ready, obs.generation, now, previous_conditions),
        ],
        "model": obs.model,
        "pvName": obs.pv_name,
        "pvcName": obs.pvc_name,
        "jobName": obs.job_name,
    }
    for kept in ("resolvedRevision", "sizeBytes", "size", "fileCount", "format", "progress"):
        if kept in obs.previous:
            status[kept] = obs.previous[kept]
    report = obs.report
    if report:
        status["progress"] = {
            "bytesDone": report.bytesDone, "bytesTotal": report.bytesTotal,
            "filesDone": report.filesDone, "filesTotal": report.filesTotal,
            "bytesPerSecond": report.bytesPerSecond, "percent": _percent(report),
        }
        if report.state == "Published":
            status |= {
                "resolvedRevision": report.resolvedRevision,
                "sizeBytes": report.bytesTotal,
                "size": human_bytes(report.bytesTotal),
                "fileCount": report.filesTotal,
                "format": report.format,
            }
    return {k: v for k, v in status.items() if v is not None}


def transitions(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(event type, reason, message) for each condition whose status or reason changed."""
    before = {c["type"]: c for c in old.get("conditions") or []}
    events = []
    for cond in new["conditions"]:
        prior = before.get(cond["type"])
        if prior and prior["status"] == cond["status"] and prior["reason"] == cond["reason"]:
            continue
        kind = "Warning" if cond["status"] == "False" and new["phase"] in ("Failed", "Pending") else "Normal"
        events.append((kind, cond["reason"], f"{cond['type']}={cond['status']}: {cond['message']}"))
    return events
