"""A branch is resolved once per download and pinned; an upstream move is a condition, checked on a bounded
schedule by a small Job, never a silent move."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.names import ANNOTATION_RETRY, LABEL_ROLE
from modelcache_operator.builders import jobs, naming, upstream
from modelcache_operator.builders.cache_status import cache_status
from modelcache_operator.builders.status import DownloadObservation, JobObservation, download_status
from tests.unit.test_builders import DOWNLOAD_BODY, NFS, download_spec, store
from tests.unit.test_status import CACHE, download

A, B = "a" * 40, "b" * 40
NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
JOB = "mc-dl-x"


def published_status(updated_at: str, checked_at: str | None = None, upstream_at: str = A) -> api.ModelDownloadStatus:
    status: dict[str, Any] = {"phase": "Ready", "resolvedRevision": A, "download": {
        "jobName": JOB, "state": "Published", "requestedRevision": "main", "resolvedRevision": A,
        "updatedAt": updated_at}}
    if checked_at:
        status["upstream"] = {"revision": upstream_at, "checkedAt": checked_at, "jobName": "mc-ck-x"}
    return api.ModelDownloadStatus.model_validate(status)


def ago(seconds: int) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_branch_is_checked_once_per_interval_from_the_last_check_or_the_publication() -> None:
    spec = download_spec()  # revision main
    assert not upstream.check_due(spec, published_status(ago(3599)), 3600, NOW)
    assert upstream.check_due(spec, published_status(ago(3600)), 3600, NOW)
    assert not upstream.check_due(spec, published_status(ago(99999), checked_at=ago(10)), 3600, NOW)
    assert upstream.check_due(spec, published_status(ago(99999), checked_at=ago(3601)), 3600, NOW)
    assert not upstream.check_due(spec, published_status(ago(99999)), 0, NOW)  # 0: never


def test_commits_and_unpublished_downloads_are_never_checked() -> None:
    commit = download_spec()
    assert commit.source.huggingface is not None
    commit.source.huggingface.revision = A
    assert not upstream.check_due(commit, published_status(ago(99999)), 60, NOW)
    downloading = published_status(ago(99999)).model_copy(update={"phase": "Downloading"})
    assert not upstream.check_due(download_spec(), downloading, 60, NOW)


def test_one_check_job_name_per_round_bounded_and_deterministic() -> None:
    first = published_status(ago(10))
    second = published_status(ago(10), checked_at=ago(5))
    name = upstream.check_job_name("x" * 60, first)
    assert name == upstream.check_job_name("x" * 60, first)
    assert name != upstream.check_job_name("x" * 60, second)
    assert len(name) <= naming.DNS_LABEL_MAX and name.startswith("mc-ck-")


def test_the_check_job_only_resolves_and_mounts_no_store_volume() -> None:
    job = jobs.download_job(DOWNLOAD_BODY, download_spec(), store(nfs=NFS), "img:1")
    check = upstream.with_check_mode(job, "mc-ck-x-123456")
    pod = check["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MC_MODE"] == "check" and env["MC_JOB_NAME"] == "mc-ck-x-123456" and env["MC_REVISION"] == "main"
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert all(m["name"] == "tmp" for m in container["volumeMounts"])
    assert pod["serviceAccountName"] == job["spec"]["template"]["spec"]["serviceAccountName"]
    assert check["metadata"]["labels"][LABEL_ROLE] == upstream.CHECK_ROLE
    assert check["spec"]["template"]["metadata"]["labels"][LABEL_ROLE] == upstream.CHECK_ROLE
    assert check["spec"]["backoffLimit"] == 0
    assert check["spec"]["ttlSecondsAfterFinished"] == upstream.CHECK_JOB_TTL_SECONDS
    assert job["spec"]["template"]["spec"]["containers"][0]["env"] != container["env"]  # the original untouched


def test_a_later_job_fetches_the_pinned_commit_and_replaces_pods_only_once_terminal() -> None:
    fresh = jobs.download_job(DOWNLOAD_BODY, download_spec(), store(nfs=NFS), "img:1")
    pinned = jobs.download_job(DOWNLOAD_BODY, download_spec(), store(nfs=NFS), "img:1", pinned=A)
    env = {e["name"]: e.get("value") for e in pinned["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MC_PINNED_REVISION"] == A and env["MC_REVISION"] == "main"
    assert "MC_PINNED_REVISION" not in {e["name"] for e in fresh["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert fresh["spec"]["podReplacementPolicy"] == "Failed"


def test_the_first_resolved_commit_stays_pinned_in_the_download_status() -> None:
    base = DownloadObservation(1, JOB, JobObservation(name=JOB, active=True), None)
    moved = api.DownloadReport(jobName=JOB, state="Downloading", requestedRevision="main", resolvedRevision=B)
    status = download_status(replace(base, report=moved, previous={"resolvedRevision": A}), "t")
    assert status["resolvedRevision"] == A
    first = download_status(replace(base, report=moved), "t")
    assert first["resolvedRevision"] == B


def test_source_updated_names_both_commits_and_the_user_action() -> None:
    check = api.UpstreamCheck(revision=B, checkedAt="2026-01-02T00:00:00Z")
    status, reason, message = upstream.source_updated("main", A, check) or ("", "", "")
    assert (status, reason) == ("True", "UpstreamMoved")
    assert A in message and B in message and ANNOTATION_RETRY in message
    assert upstream.source_updated("main", A, check.model_copy(update={"revision": A}))[:2] == (  # type: ignore[index]
        "False", "UpToDate")
    assert upstream.source_updated("main", A, None) is None


def test_a_cache_shows_source_updated_and_stays_on_its_commit() -> None:
    served = download("Published", bytesTotal=4)
    served["upstream"] = {"revision": B, "checkedAt": "2026-01-02T00:00:00Z", "jobName": "mc-ck-x"}
    result = cache_status(replace(CACHE, download=served), "t")
    conditions = {c["type"]: c for c in result["conditions"]}
    assert conditions["SourceUpdated"]["status"] == "True" and B in conditions["SourceUpdated"]["message"]
    assert result["resolvedRevision"] == A and result["phase"] == "Ready"
    assert "SourceUpdated" not in {c["type"] for c in cache_status(replace(CACHE, download=download(
        "Published", bytesTotal=4)), "t")["conditions"]}
