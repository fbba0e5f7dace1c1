"""Status as a pure function of what a reconciler observed: ModelDownloads, then the ModelCaches that want
them. Conditions are metav1.Condition-shaped, with Ready as the summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import v1alpha2 as api

STORAGE_READY = "StorageReady"
DOWNLOADED = "Downloaded"
READY = "Ready"

ConditionValue = tuple[str, str, str]  # status, reason, message
SERVED_FIELDS = ("resolvedRevision", "revisionPath", "servedFrom", "sizeBytes", "size", "fileCount", "format")


@dataclass(frozen=True)
class JobObservation:
    name: str
    uid: str = ""
    started: str | None = None  # RFC 3339, from the Job's status
    finished: str | None = None
    active: bool = False
    succeeded: bool = False
    failed: bool = False
    failure_reason: str | None = None
    failure_message: str | None = None
    final_report: api.DownloadReport | None = None  # a Complete Job's Published report, from its termination message


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def percent(report: api.DownloadReport) -> str:
    if report.bytesTotal <= 0:
        return "0%"
    return f"{min(100.0, 100.0 * report.bytesDone / report.bytesTotal):.0f}%"


def condition(kind: str, value: ConditionValue, generation: int, now: str,
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


def progress(report: api.DownloadReport) -> dict[str, Any]:
    return {"bytesDone": report.bytesDone, "bytesTotal": report.bytesTotal, "filesDone": report.filesDone,
            "filesTotal": report.filesTotal, "bytesPerSecond": report.bytesPerSecond, "percent": percent(report)}


# ----- ModelDownload -----

@dataclass(frozen=True)
class DownloadObservation:
    generation: int
    job_name: str
    job: JobObservation | None
    report: api.DownloadReport | None  # only a report from job_name
    blocked: ConditionValue | None = None  # the Job cannot be created yet: (False, reason, message)
    previous: dict[str, Any] = field(default_factory=dict)
    unused_since: str | None = None  # since when no cache wants and no pod uses it
    report_from_job: bool = False  # `report` came from the Job's termination message, not from status


def container_config_error(pod_status: dict[str, Any]) -> str | None:
    """The kubelet's message when it cannot start a container because a referenced Secret, key or
    ConfigMap is missing (CreateContainerConfigError). The operator may not read Secrets; this is how it
    learns that one is missing."""
    for container in [*(pod_status.get("initContainerStatuses") or []), *(pod_status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "CreateContainerConfigError":
            return str(waiting.get("message") or "CreateContainerConfigError")
    return None


def missing_reference(job_name: str, kubelet_message: str) -> ConditionValue:
    """A download blocked until the Secret (or ConfigMap) its pod references exists."""
    reason = "SecretNotFound" if "secret" in kubelet_message.lower() else "ContainerConfigError"
    return "False", reason, f"the pod of Job {job_name} cannot start: {kubelet_message}"


def finished_job(previous: dict[str, Any], job_name: str, report: api.DownloadReport | None) -> JobObservation | None:
    """The outcome of `job_name` as status recorded it, once the Job is gone (ttlSecondsAfterFinished): a
    published report, or a Failed phase with its reason. None when status records no outcome of that Job."""
    if report and report.state == "Published":
        return JobObservation(name=job_name, succeeded=True)
    if previous.get("jobName") != job_name or previous.get("phase") != "Failed":
        return None
    failed: dict[str, Any] = next((c for c in previous.get("conditions") or [] if c.get("type") == DOWNLOADED), {})
    return JobObservation(name=job_name, failed=True, failure_reason=failed.get("reason"),
                          failure_message=failed.get("message"))


def _download_verdict(obs: DownloadObservation) -> tuple[api.Phase, ConditionValue]:
    report, job = obs.report, obs.job
    if report and report.state == "Published":
        return "Ready", ("True", "Published", f"revision {report.resolvedRevision} published by Job {obs.job_name}")
    if job and job.failed:
        failed_report = report if report and report.state == "Failed" else None
        reason = (failed_report.reason if failed_report else None) or job.failure_reason or "JobFailed"
        message = (failed_report.message if failed_report else None) or job.failure_message \
            or f"download Job {obs.job_name} failed"
        return "Failed", ("False", reason, message)
    if obs.blocked:
        return "Pending", obs.blocked
    if job is None:
        return "Downloading", ("False", "JobPending", f"download Job {obs.job_name} is being created")
    if report and report.state == "Verifying":
        return "Verifying", ("False", "Verifying", "checking sizes and sha256 of the downloaded files")
    if job.succeeded:
        return "Verifying", ("False", "AwaitingReport",
                             f"Job {obs.job_name} completed; waiting for the downloader's final report")
    if report and report.state in ("Resolving", "Downloading"):
        return "Downloading", ("False", report.state, f"{percent(report)} of {human_bytes(report.bytesTotal)}")
    return "Downloading", ("False", "JobRunning", f"download Job {obs.job_name} is running")


def download_status(obs: DownloadObservation, now: str) -> dict[str, Any]:
    """The operator's part of a ModelDownload's status; `download` (the report) belongs to the downloader."""
    phase, downloaded = _download_verdict(obs)
    previous_conditions: list[dict[str, Any]] = obs.previous.get("conditions") or []
    ready = ("True", "Ready", downloaded[2]) if phase == "Ready" else downloaded
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": obs.generation,
        "conditions": [condition(DOWNLOADED, downloaded, obs.generation, now, previous_conditions),
                       condition(READY, ready, obs.generation, now, previous_conditions)],
        "jobName": obs.job_name,
    }
    for kept in ("resolvedRevision", "sizeBytes"):
        if obs.previous.get(kept) is not None:
            status[kept] = obs.previous[kept]
    if obs.unused_since:
        status["unusedSince"] = obs.unused_since
    if obs.report and obs.report.resolvedRevision and "resolvedRevision" not in status:
        # Pinned by the first report that resolved it: a later Job or pod fetches this commit again.
        status["resolvedRevision"] = obs.report.resolvedRevision
    if obs.report and obs.report.state == "Published":
        status["sizeBytes"] = obs.report.bytesTotal
        if obs.report_from_job:
            # Taken from the Job's termination message (the downloader's last patch was lost): kept in status,
            # so that deleting the Job loses nothing.
            status["download"] = obs.report.model_dump(mode="json", exclude_none=True)
    return status
