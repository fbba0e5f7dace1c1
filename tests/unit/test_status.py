"""Status as a pure function of observations: phases, conditions, transition times and events."""

from __future__ import annotations

from dataclasses import replace

import pytest

from modelcache_operator.api.v1alpha1 import DownloadReport
from modelcache_operator.builders import status
from modelcache_operator.builders.status import JobObservation, Observation

JOB = "mc-dl-qwen-1"
BASE = Observation(generation=3, model="hf:Qwen/Qwen3-8B", pv_name="pv", pvc_name="pvc", pvc_phase="Bound",
                   job_name=JOB, job=JobObservation(name=JOB, active=True), report=None)


def report(state: str, **fields: object) -> DownloadReport:
    return DownloadReport.model_validate({"jobName": JOB, "state": state, **fields})


@pytest.mark.parametrize(("obs", "phase", "reason"), [
    (replace(BASE, pvc_phase=None), "Provisioning", "PVCMissing"),
    (replace(BASE, pvc_phase="Pending"), "Provisioning", "PVCNotBound"),
    (replace(BASE, secret_problem="Secret hf-token not found"), "Pending", "SecretNotFound"),
    (replace(BASE, job=None), "Downloading", "JobPending"),
    (BASE, "Downloading", "JobRunning"),
    (replace(BASE, report=report("Downloading", bytesDone=5, bytesTotal=10)), "Downloading", "Downloading"),
    (replace(BASE, report=report("Verifying")), "Verifying", "Verifying"),
    (replace(BASE, job=JobObservation(name=JOB, succeeded=True)), "Verifying", "AwaitingReport"),
    (replace(BASE, report=report("Published", resolvedRevision="a" * 40, bytesTotal=10)), "Ready", "Ready"),
    (replace(BASE, job=JobObservation(name=JOB, failed=True, failure_reason="DeadlineExceeded",
                                      failure_message="Job was active longer than specified deadline")),
     "Failed", "DeadlineExceeded"),
    (replace(BASE, job=JobObservation(name=JOB, failed=True, failure_reason="PodFailurePolicy"),
             report=report("Failed", reason="Unauthorized", message="401 from the hub")), "Failed", "Unauthorized"),
    (replace(BASE, invalid_spec="spec.storage: exactly one backend"), "Failed", "InvalidSpec"),
    (replace(BASE, deleting=True, deletion_blocked_by=["vllm-0"]), "Deleting", "InUse"),
    (replace(BASE, deleting=True), "Deleting", "Deleting"),
])
def test_phase_and_ready_reason(obs: Observation, phase: str, reason: str) -> None:
    result = status.desired_status(obs, "2026-01-01T00:00:00Z")
    ready = next(c for c in result["conditions"] if c["type"] == "Ready")
    assert (result["phase"], ready["reason"]) == (phase, reason)
    assert ready["status"] == ("True" if phase == "Ready" else "False")
    assert all(c["observedGeneration"] == 3 for c in result["conditions"])
    assert result["observedGeneration"] == 3


def test_published_report_fills_size_revision_and_progress() -> None:
    obs = replace(BASE, report=report("Published", resolvedRevision="c" * 40, bytesDone=3 * 1024**3,
                                      bytesTotal=3 * 1024**3, filesDone=7, filesTotal=7, format="safetensors"))
    result = status.desired_status(obs, "now")
    assert result["resolvedRevision"] == "c" * 40
    assert (result["sizeBytes"], result["size"], result["fileCount"]) == (3 * 1024**3, "3.0GiB", 7)
    assert result["progress"]["percent"] == "100%"


def test_previous_revision_stays_while_a_new_one_downloads() -> None:
    previous = {"resolvedRevision": "a" * 40, "sizeBytes": 10, "size": "10B"}
    obs = replace(BASE, previous=previous, report=report("Downloading", bytesDone=1, bytesTotal=4))
    result = status.desired_status(obs, "now")
    assert result["phase"] == "Downloading" and result["resolvedRevision"] == "a" * 40
    assert result["progress"]["percent"] == "25%"


def test_transition_time_moves_only_when_status_changes() -> None:
    first = status.desired_status(BASE, "t1")
    same = status.desired_status(replace(BASE, previous=first), "t2")
    assert [c["lastTransitionTime"] for c in same["conditions"]] == ["t1", "t1", "t1"]
    ready = status.desired_status(replace(BASE, previous=first, report=report(
        "Published", resolvedRevision="a" * 40, bytesTotal=1)), "t3")
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times == {"StorageReady": "t1", "Downloaded": "t3", "Ready": "t3"}


def test_transitions_become_events_once() -> None:
    first = status.desired_status(BASE, "t1")
    assert {e[1] for e in status.transitions({}, first)} == {"PVCBound", "JobRunning"}
    assert status.transitions(first, status.desired_status(replace(BASE, previous=first), "t2")) == []
    failed = status.desired_status(replace(BASE, previous=first, secret_problem="missing"), "t3")
    events = status.transitions(first, failed)
    assert {e[0] for e in events} == {"Warning"} and {e[1] for e in events} == {"SecretNotFound"}


@pytest.mark.parametrize(("size", "text"), [(0, "0B"), (1023, "1023B"), (1536, "1.5KiB"), (5 * 1024**4, "5.0TiB")])
def test_human_bytes(size: int, text: str) -> None:
    assert status.human_bytes(size) == text
