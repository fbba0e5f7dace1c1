"""A durable outcome: a Complete Job's termination message carries the Published report the status lost."""

from __future__ import annotations

import json

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.builders.status import DownloadObservation, JobObservation, download_status
from modelcache_operator.operator.downloads import with_termination_message

JOB = "mc-dl-abc"
SHA = "a" * 40


def published(job: str = JOB) -> api.DownloadReport:
    return api.DownloadReport(jobName=job, state="Published", resolvedRevision=SHA, bytesDone=85,
                              bytesTotal=85, filesDone=1, filesTotal=1, format="safetensors")


def message(report: api.DownloadReport) -> str:
    return json.dumps({"reason": "Published", "message": "published",
                       "report": report.model_dump(mode="json", exclude_none=True)})


def test_a_complete_job_carries_its_published_report() -> None:
    job = with_termination_message(JobObservation(name=JOB, succeeded=True), message(published()))
    assert job.final_report == published()
    assert job.failure_reason is None


def test_a_running_or_failed_job_takes_no_report_from_a_message() -> None:
    running = with_termination_message(JobObservation(name=JOB, active=True), message(published()))
    assert running.final_report is None
    failed = with_termination_message(JobObservation(name=JOB, failed=True),
                                      json.dumps({"reason": "NotFound", "message": "HTTP 404"}))
    assert (failed.final_report, failed.failure_reason) == (None, "NotFound")
    garbage = with_termination_message(JobObservation(name=JOB, succeeded=True),
                                       json.dumps({"reason": "Published", "report": {"state": "Nope"}}))
    assert garbage.final_report is None


def test_the_recovered_report_is_ready_and_kept_in_status() -> None:
    previous = {"download": {"jobName": JOB, "state": "Verifying"}}
    status = download_status(DownloadObservation(1, JOB, JobObservation(name=JOB, succeeded=True), published(),
                                                 previous=previous, report_from_job=True), "2026-01-01T00:00:00Z")
    assert status["phase"] == "Ready"
    assert status["resolvedRevision"] == SHA and status["sizeBytes"] == 85
    assert status["download"]["state"] == "Published"  # survives the Job's deletion


def test_a_report_the_downloader_delivered_is_left_to_it() -> None:
    previous = {"download": published().model_dump(mode="json", exclude_none=True)}
    status = download_status(DownloadObservation(1, JOB, None, published(), previous=previous),
                             "2026-01-01T00:00:00Z")
    assert status["phase"] == "Ready" and "download" not in status
