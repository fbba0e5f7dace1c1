"""One idempotent reconcile of a ModelDownload: the downloader's identity and its Job, and the status that
every ModelCache wanting the download reads."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ..api import v1alpha2 as api
from ..api.names import ANN_REMOVAL, ANNOTATION_RETRY, FINALIZER
from ..builders import jobs, naming, upstream
from ..builders.job_options import with_image_settings, with_store_options
from ..builders.status import (
    DownloadObservation,
    JobObservation,
    download_status,
    finished_job,
    missing_reference,
)
from . import metrics
from .converge import Converger, now_rfc3339, object_key, parse_time, validation_message
from .views import DownloadView, StoreEntry

log = logging.getLogger(__name__)


def with_termination_message(job: JobObservation, message: str) -> JobObservation:
    """What the downloader wrote to its pod's termination message: a failed Job's reason and message, or a
    Complete Job's Published report (which survives a lost status patch)."""
    try:
        parsed = json.loads(message)
    except ValueError:
        return job
    if not isinstance(parsed, dict) or not parsed.get("reason"):
        return job
    if job.succeeded:
        try:
            report = api.DownloadReport.model_validate(parsed.get("report"))
        except ValidationError:
            return job
        return replace(job, final_report=report) if report.state == "Published" else job
    if not job.failed:
        return job
    return replace(job, failure_reason=str(parsed["reason"]),
                   failure_message=str(parsed.get("message") or job.failure_message or ""))


def _refusal(error: ApiException, store: str) -> str:
    try:
        message = str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        message = str(error.reason)
    return f'the download Job was refused (check ModelStore "{store}" spec.downloadJob): {message}'


def _invalid_store(store: StoreEntry) -> str | None:
    """The store reconciler's verdict: an Invalid store (hostPath disabled, an overlapping root) gets no new
    download Jobs."""
    status = store.body.get("status") or {}
    if status.get("phase") != "Invalid":
        return None
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return f'ModelStore "{store.body["metadata"]["name"]}" is Invalid: {ready.get("message", "")}'


def _no_job_yet(view: DownloadView, folder: str) -> tuple[str, str, str] | None:
    """Why a download may not start its Job now: an Invalid store, or another download's Job writing the same
    folder (one Job per folder at a time; the resync starts this one once that Job has published or failed)."""
    assert view.store is not None
    invalid = _invalid_store(view.store)
    if invalid:
        return "False", "StoreInvalid", invalid
    if view.folder_writer:
        return "False", "WaitingForFolder", (f"ModelDownload {view.folder_writer} is writing {folder}; this "
                                             "download starts after it")
    return None


class DownloadReconciler(Converger):
    kind = api.DOWNLOAD_KIND
    foreign_status = frozenset({"download", "upstream"})  # the downloader's report, the check Job's result

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timed: set[str] = set()

    def converge(self, body: dict[str, Any], view: DownloadView) -> str:
        meta = body["metadata"]
        generation = meta.get("generation", 1)
        job_name = naming.download_job_name(meta["name"])
        previous = body.get("status") or {}
        raw_report = previous.get("download")
        report = api.DownloadReport.from_api(raw_report) \
            if raw_report and raw_report.get("jobName") == job_name else None
        final = view.job.final_report if view.job else None
        from_job = bool(final and final.jobName == job_name and (report is None or report.state != "Published"))
        if from_job:
            report = final  # the Job completed and published; its last status patch never arrived
        unused_since = None if view.wanted_by or view.used_by else previous.get("unusedSince") or now_rfc3339()

        def write(job: JobObservation | None, blocked: tuple[str, str, str] | None = None) -> str:
            return self.write_status(body, lambda before: download_status(
                DownloadObservation(generation, job_name, job, report, blocked, before, unused_since, from_job),
                now_rfc3339()))

        try:
            spec = api.ModelDownloadSpec.from_api(body.get("spec") or {})
        except ValidationError as error:
            return write(None, ("False", "InvalidSpec", validation_message(error)))
        if view.store is None or view.store.spec is None:
            return write(view.job, ("False", "StoreNotFound", f'ModelStore "{spec.store}" is missing or invalid'))
        store = view.store.spec
        self.ensure_finalizer(body)
        # A finished Job removed by its TTL: its outcome is in status, and it never runs again.
        job = view.job or finished_job(previous, job_name, report)
        if job is None and report is not None and report.state == "Published":
            return write(None)  # published: a deleted Job is never re-run, the revision never re-resolved
        blocked = _no_job_yet(view, spec.folder) if job is None else None
        if blocked:
            return write(None, blocked)
        if job is None:
            # No Secret is read here (the operator may not): a missing token shows as the pod's
            # CreateContainerConfigError, which the kubelet retries until the Secret exists.
            for manifest in jobs.downloader_rbac(body):
                self.apply(object_key(body), manifest)
            job_manifest = jobs.download_job(body, spec, store, self.config.image, view.quota_free_bytes,
                                             pinned=previous.get("resolvedRevision"))
            try:
                self.apply(object_key(body), self._configured(job_manifest, store.downloadJob), present=False)
            except ApiException as error:
                if error.status != 422:
                    raise
                # The store's downloadJob options (an affinity, say) made a Job the apiserver refuses.
                return write(None, ("False", "JobRejected", _refusal(error, spec.store)))
            job = JobObservation(name=job_name, active=True)
        self._observe_duration(job)
        phase = write(job, missing_reference(job_name, view.config_error) if view.config_error else None)
        if unused_since and self._expired(store, unused_since, phase == "Ready", view):
            self.remove(body, "ttl")
        elif view.wanted_by:
            self._check_upstream(body, spec, store, view)
        return phase

    def _check_upstream(self, body: dict[str, Any], spec: api.ModelDownloadSpec, store: api.ModelStoreSpec,
                        view: DownloadView) -> None:
        """Starts this round's check Job once the interval since the last check has passed. The resync
        timer brings the reconcile back; nothing waits here."""
        status = api.ModelDownloadStatus.from_api(body.get("status") or {})
        if not upstream.check_due(spec, status, self.config.upstream_check_seconds, datetime.now(UTC)):
            return
        name = upstream.check_job_name(body["metadata"]["name"], status)
        if any(job.name == name for job in view.check_jobs):
            return  # running, or failed and kept until its TTL: then the next round tries again
        check = upstream.with_check_mode(jobs.download_job(body, spec, store, self.config.image), name)
        self.apply(object_key(body), self._configured(check, store.downloadJob), present=False)

    @staticmethod
    def _expired(store: api.ModelStoreSpec, unused_since: str, published: bool, view: DownloadView) -> bool:
        """Unused for longer than the TTL, and not among the newest revisions the store keeps per model."""
        retention = store.retention
        if retention.policy != "Delete" or (published and view.newer_published < retention.keepRevisions):
            return False
        return (datetime.now(UTC) - parse_time(unused_since)).total_seconds() >= retention.ttlSecondsAfterUnused

    def remove(self, body: dict[str, Any], reason: str) -> None:
        """Starts the removal of a download and its folder; the finalizer deletes the files first."""
        meta = body["metadata"]
        log.info("Removing ModelDownload %s/%s and its folder (%s)", meta["namespace"], meta["name"], reason)
        self.kube.annotate(self.kind, meta["namespace"], meta["name"], {ANN_REMOVAL: reason})
        self.kube.delete(self.kind, meta["name"], meta["namespace"])

    # ----- deletion -----

    def finalize(self, body: dict[str, Any], view: DownloadView) -> str:
        """A download removed by retention takes its revision folder along; any other deletion (its store's,
        an admin's) keeps the files."""
        meta = body["metadata"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return "Deleting"
        reason = (meta.get("annotations") or {}).get(ANN_REMOVAL)
        revision = (body.get("status") or {}).get("resolvedRevision")
        store_name = str((body.get("spec") or {}).get("store"))
        if reason and revision and view.store is not None and not view.twin_alive:
            options = view.store.spec.downloadJob if view.store.spec else None
            if not self._cleaned_up(body, revision, view.cleanup_job, options):
                return "Deleting"
            metrics.REVISIONS_REMOVED.labels(store=store_name, reason=reason).inc()
            message = f"revision {revision} in {body['spec']['folder']} removed ({reason})"
            self.emit(body, "Normal", "RevisionRemoved", message)
            self.emit(view.store.body, "Normal", "RevisionRemoved", f"{meta['namespace']}/{meta['name']}: {message}")
        self.remove_finalizer(body)
        self.forget(object_key(body))
        return "Deleting"

    def _configured(self, job: dict[str, Any], options: api.DownloadJobOptions | None) -> dict[str, Any]:
        """A Job with the chart's image settings and the store's downloadJob options."""
        here = job["metadata"]["namespace"] == self.config.operator_namespace
        chart = with_image_settings(job, self.config.image_pull_policy, self.config.image_pull_secrets if here else ())
        return with_store_options(chart, options)

    def _cleaned_up(self, body: dict[str, Any], revision: str, cleanup: JobObservation | None,
                    options: api.DownloadJobOptions | None) -> bool:
        """Runs the cleanup Job once per value of the retry annotation. A failure is kept in status, so the
        Job is not run again after its TTL removed it; a new annotation value runs a new one."""
        meta = body["metadata"]
        retry = (meta.get("annotations") or {}).get(ANNOTATION_RETRY, "")
        recorded = (body.get("status") or {}).get("cleanupFailed") or {}
        if cleanup is None:
            if recorded and recorded.get("retry") == retry:
                return False  # failed under this retry value; its Job is gone
            spec = api.ModelDownloadSpec.from_api(body.get("spec") or {})
            manifest = self._configured(jobs.cleanup_job(body, spec, revision, self.config.image), options)
            self.apply(object_key(body), manifest, present=False)
            return False
        if cleanup.failed and cleanup.uid != recorded.get("jobUid"):
            message = (f"Job {cleanup.name} could not remove revision {revision}: {cleanup.failure_message or ''}; "
                       f"fix it and set the annotation {ANNOTATION_RETRY} to a new value to retry, or remove the "
                       f"finalizer {FINALIZER} to keep the files")
            self.kube.patch_status(self.kind, meta["namespace"], meta["name"], {"cleanupFailed": {
                "jobUid": cleanup.uid, "retry": retry, "message": message[:1024]}})
            self.emit(body, "Warning", "CleanupFailed", message)
        elif cleanup.failed and recorded.get("retry") != retry:
            self.kube.delete("Job", cleanup.name, meta["namespace"])  # the retry runs a fresh Job
        return cleanup.succeeded

    def _observe_duration(self, job: JobObservation) -> None:
        """Records each finished download Job once per process (a restart may record a Job again)."""
        if not (job.succeeded or job.failed) or not job.started or not job.finished or job.name in self._timed:
            return
        self._timed.add(job.name)
        seconds = (parse_time(job.finished) - parse_time(job.started)).total_seconds()
        metrics.DOWNLOAD_SECONDS.labels(result="succeeded" if job.succeeded else "failed").observe(max(seconds, 0))
