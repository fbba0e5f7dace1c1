"""Status as a pure function of observations: ModelDownload phases, the ModelCaches that read them, transition
times and events."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.builders import layout, status
from modelcache_operator.builders.cache_status import CacheObservation, cache_status
from modelcache_operator.builders.status import (
    DownloadObservation,
    JobObservation,
    container_config_error,
    download_status,
    finished_job,
    missing_reference,
)

JOB = "mc-dl-nfs-qwen-1"
BASE = DownloadObservation(generation=1, job_name=JOB, job=JobObservation(name=JOB, active=True), report=None)
A, B = "a" * 40, "b" * 40


def report(state: str, **fields: object) -> api.DownloadReport:
    return api.DownloadReport.model_validate({"jobName": JOB, "state": state, **fields})


@pytest.mark.parametrize(("obs", "phase", "reason"), [
    (replace(BASE, job=None, blocked=("False", "SecretNotFound", "Secret hf-token not found")), "Pending",
     "SecretNotFound"),
    (replace(BASE, job=None), "Downloading", "JobPending"),
    (BASE, "Downloading", "JobRunning"),
    (replace(BASE, report=report("Downloading", bytesDone=5, bytesTotal=10)), "Downloading", "Downloading"),
    (replace(BASE, report=report("Verifying")), "Verifying", "Verifying"),
    (replace(BASE, job=JobObservation(name=JOB, succeeded=True)), "Verifying", "AwaitingReport"),
    (replace(BASE, job=JobObservation(name=JOB, failed=True, failure_reason="BackoffLimitExceeded")), "Failed",
     "BackoffLimitExceeded"),
    (replace(BASE, job=JobObservation(name=JOB, failed=True), report=report("Failed", reason="Unauthorized",
                                                                              message="401")), "Failed",
     "Unauthorized"),
    (replace(BASE, report=report("Published", resolvedRevision=A, bytesTotal=9)), "Ready", "Ready"),
])
def test_download_phase_and_ready_reason(obs: DownloadObservation, phase: str, reason: str) -> None:
    result = download_status(obs, "2026-01-01T00:00:00Z")
    ready = next(c for c in result["conditions"] if c["type"] == "Ready")
    assert (result["phase"], ready["reason"]) == (phase, reason)
    assert ready["status"] == ("True" if phase == "Ready" else "False")
    assert "download" not in result  # the downloader's report is never written by the operator


def test_a_missing_secret_is_read_from_the_pods_container_config_error() -> None:
    """What the kubelet writes when a secretKeyRef cannot be resolved; the operator reads no Secret."""
    waiting = {"containerStatuses": [{"name": "downloader", "state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "hf-token" not found'}}}]}
    assert container_config_error(waiting) == 'secret "hf-token" not found'
    assert container_config_error({"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}],
                                   "initContainerStatuses": [{"state": {"running": {}}}]}) is None
    blocked = missing_reference(JOB, "couldn't find key HF_TOKEN in Secret team/hf-token")
    result = download_status(replace(BASE, blocked=blocked), "now")
    ready = next(c for c in result["conditions"] if c["type"] == "Ready")
    assert (result["phase"], ready["reason"]) == ("Pending", "SecretNotFound")
    assert JOB in ready["message"] and "couldn't find key HF_TOKEN" in ready["message"]
    assert missing_reference(JOB, 'configmap "ca" not found')[1] == "ContainerConfigError"


def test_a_job_removed_after_it_finished_keeps_its_outcome() -> None:
    """ttlSecondsAfterFinished removed the Job: status says how it ended, so no new Job is due."""
    published = report("Published", resolvedRevision=A, bytesTotal=9)
    failed = download_status(replace(BASE, job=JobObservation(name=JOB, failed=True, failure_reason="NotFound",
                                                              failure_message="no such repo")), "t0")
    running = download_status(BASE, "t0")
    assert finished_job({}, JOB, published) == JobObservation(name=JOB, succeeded=True)
    assert finished_job(failed, JOB, None) == JobObservation(name=JOB, failed=True, failure_reason="NotFound",
                                                             failure_message="no such repo")
    assert finished_job(failed, "mc-dl-another", None) is None
    assert finished_job(running, JOB, report("Downloading")) is None  # killed mid-way: resume in a new Job
    again = download_status(replace(BASE, job=finished_job(failed, JOB, None), previous=failed), "t1")
    assert again == failed


def test_published_download_records_revision_and_size() -> None:
    result = download_status(replace(BASE, report=report("Published", resolvedRevision=A, bytesTotal=42)), "now")
    assert (result["resolvedRevision"], result["sizeBytes"], result["jobName"]) == (A, 42, JOB)


PLACE = layout.Placement(model_dir="hf/Qwen/Qwen3-8B", filter="all", private=False, dynamic=False)
REF = api.DownloadRef(namespace="modelcache-system", name="nfs-qwen-1", shared=True, requestedBy="team-a/qwen")
CACHE = CacheObservation(generation=3, model="hf:Qwen/Qwen3-8B", store="nfs", placement=PLACE, pv_name="pv",
                         pvc_name="modelcache-qwen", pvc_phase="Bound", download_ref=REF, download=None)


def download(state: str | None, revision: str = A, **fields: Any) -> dict[str, Any]:
    """A ModelDownload's status as its reconciler and downloader leave it."""
    obs = replace(BASE, report=report(state, resolvedRevision=revision, **fields) if state else None)
    result = download_status(obs, "t0")
    if state:
        result["download"] = obs.report.model_dump(exclude_none=True) if obs.report else None
    return result


@pytest.mark.parametrize(("obs", "phase", "reason"), [
    (replace(CACHE, invalid_spec="spec.x: bad"), "Failed", "InvalidSpec"),
    (replace(CACHE, store_problem=("StoreNotAllowed", "no")), "Pending", "StoreNotAllowed"),
    (replace(CACHE, pvc_phase=None), "Provisioning", "PVCMissing"),
    (replace(CACHE, pvc_phase="Pending"), "Provisioning", "PVCNotBound"),
    (CACHE, "Downloading", "DownloadPending"),
    (replace(CACHE, download=download("Downloading", bytesDone=1, bytesTotal=4)), "Downloading", "Downloading"),
    (replace(CACHE, download=download("Published", bytesTotal=4)), "Ready", "Ready"),
    (replace(CACHE, deleting=True), "Deleting", "Deleting"),
])
def test_cache_phase_and_ready_reason(obs: CacheObservation, phase: str, reason: str) -> None:
    result = cache_status(obs, "2026-01-01T00:00:00Z")
    ready = next(c for c in result["conditions"] if c["type"] == "Ready")
    assert (result["phase"], ready["reason"]) == (phase, reason)
    assert all(c["observedGeneration"] == 3 for c in result["conditions"])


def test_published_download_is_what_new_pods_get() -> None:
    result = cache_status(replace(CACHE, download=download("Published", bytesTotal=3 * 1024**3, filesTotal=7,
                                                           format="safetensors")), "now")
    assert (result["resolvedRevision"], result["revisionPath"]) == (A, f"all/{A}")
    assert (result["sizeBytes"], result["size"], result["fileCount"]) == (3 * 1024**3, "3.0GiB", 7)
    assert result["downloadRef"] == REF.model_dump()
    assert "pendingRevisionPath" not in result


def test_old_revision_is_served_while_a_new_one_downloads() -> None:
    served = cache_status(replace(CACHE, download=download("Published", bytesTotal=10)), "t1")
    changing = cache_status(replace(CACHE, previous=served, download=download("Downloading", revision=B,
                                                                              bytesDone=1, bytesTotal=4)), "t2")
    assert changing["phase"] == "Downloading"
    assert (changing["resolvedRevision"], changing["revisionPath"]) == (A, f"all/{A}")
    assert changing["pendingRevisionPath"] == f"all/{B}"
    assert changing["progress"]["percent"] == "25%"
    assert A in next(c for c in changing["conditions"] if c["type"] == "Ready")["message"]
    published = cache_status(replace(CACHE, previous=changing, download=download("Published", revision=B,
                                                                                 bytesTotal=4)), "t3")
    assert published["revisionPath"] == f"all/{B}" and "pendingRevisionPath" not in published


def test_shared_downloads_say_who_requested_them() -> None:
    result = cache_status(replace(CACHE, download=download("Downloading", bytesTotal=4)), "t")
    downloaded = next(c for c in result["conditions"] if c["type"] == "Downloaded")
    assert "shared, requested by team-a/qwen" in downloaded["message"]


def test_transition_time_moves_only_when_status_changes() -> None:
    first = cache_status(CACHE, "t1")
    same = cache_status(replace(CACHE, previous=first), "t2")
    assert [c["lastTransitionTime"] for c in same["conditions"]] == ["t1", "t1", "t1"]
    ready = cache_status(replace(CACHE, previous=first, download=download("Published", bytesTotal=1)), "t3")
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times == {"StorageReady": "t1", "Downloaded": "t3", "Ready": "t3"}


def test_transitions_become_events_once() -> None:
    first = cache_status(CACHE, "t1")
    assert {e[1] for e in status.transitions({}, first)} == {"PVCBound", "DownloadPending"}
    assert status.transitions(first, cache_status(replace(CACHE, previous=first), "t2")) == []
    refused = cache_status(replace(CACHE, previous=first, store_problem=("StoreNotFound", "missing")), "t3")
    events = status.transitions(first, refused)
    assert {e[0] for e in events} == {"Warning"} and {e[1] for e in events} == {"StoreNotFound"}


@pytest.mark.parametrize(("size", "text"), [(0, "0B"), (1023, "1023B"), (1536, "1.5KiB"), (5 * 1024**4, "5.0TiB")])
def test_human_bytes(size: int, text: str) -> None:
    assert status.human_bytes(size) == text
