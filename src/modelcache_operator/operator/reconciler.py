"""One idempotent, level-based reconcile of a ModelCache.

Observed child state comes from watch-fed indices (no API reads); children are written with server-side
apply only when their desired manifest changed or they disappeared, and status only when it differs.
An idle Ready cache therefore costs no API request per resync.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ..api import v1alpha1 as api
from ..builders import jobs, naming, status, storage
from ..builders.conflict import StorageClaim, claim_of, storage_conflict
from ..builders.status import JobObservation, Observation
from . import metrics
from .config import OperatorConfig
from .kube import Kube

log = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any], str, str, str], None]
CacheKey = tuple[str, str]


@dataclass(frozen=True)
class ClusterView:
    """What the operator's watches currently know. Keys are (namespace, name)."""

    jobs: Mapping[CacheKey, JobObservation] = field(default_factory=dict)
    pvc_phases: Mapping[CacheKey, str] = field(default_factory=dict)
    pods_using: Mapping[CacheKey, list[str]] = field(default_factory=dict)
    storage_claims: tuple[StorageClaim, ...] = ()


def with_termination_message(job: JobObservation, messages: Any) -> JobObservation:
    """A failed Job's reason and message, taken from its pod's termination message when the downloader wrote one."""
    if not job.failed or not messages:
        return job
    try:
        parsed = json.loads(next(iter(messages)))
    except (ValueError, TypeError):
        return job
    if not isinstance(parsed, dict) or not parsed.get("reason"):
        return job
    return replace(job, failure_reason=str(parsed["reason"]),
                   failure_message=str(parsed.get("message") or job.failure_message or ""))


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(p) for p in item["loc"])
        parts.append(f"spec.{location}: {item['msg']}")
    return "; ".join(parts)


def _digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


class Reconciler:
    def __init__(self, kube: Kube, config: OperatorConfig, emit: EventSink):
        self.kube = kube
        self.config = config
        self.emit = emit
        self.phases = metrics.PhaseTracker()
        # Per cache, the digest of what was last applied per child; lost on restart, which costs one re-apply.
        self._applied: dict[CacheKey, dict[tuple[str, str], str]] = {}
        # The last status written per cache: a reconcile running on a body from before that write must not
        # write (and announce) the same transition again.
        self._written: dict[CacheKey, dict[str, Any]] = {}
        self._timed: set[str] = set()
        self._locks: dict[CacheKey, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, key: CacheKey) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    # ----- entry point -----

    def reconcile(self, body: dict[str, Any], view: ClusterView) -> str:
        """Returns the phase written. Serialised per cache: timers and watch events may overlap."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        started = time.perf_counter()
        with self._lock(key):
            try:
                phase = self._finalize(body, view) if meta.get("deletionTimestamp") else self._converge(body, view)
            except ApiException as error:
                if error.status != 409:
                    metrics.RECONCILE_ERRORS.labels(error=f"http{error.status}").inc()
                    raise
                # A stale body lost a compare-and-swap; the newer version's watch event reconciles again.
                metrics.RECONCILES.labels(result="conflict").inc()
                return str((body.get("status") or {}).get("phase", "Pending"))
            except Exception as error:
                metrics.RECONCILE_ERRORS.labels(error=type(error).__name__).inc()
                metrics.RECONCILES.labels(result="error").inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(result="ok").inc()
        return phase

    def forget(self, namespace: str, name: str) -> None:
        self.phases.set((namespace, name), None)
        self._applied.pop((namespace, name), None)
        self._written.pop((namespace, name), None)

    # ----- children -----

    def _apply(self, key: CacheKey, manifest: dict[str, Any], present: bool = True) -> dict[str, Any] | None:
        """Applies unless the same manifest was already applied and the child still exists."""
        child = (manifest["kind"], manifest["metadata"]["name"])
        applied = self._applied.setdefault(key, {})
        digest = _digest(manifest)
        if present and applied.get(child) == digest:
            return None
        live = self.kube.apply(manifest)
        metrics.API_WRITES.labels(kind=manifest["kind"]).inc()
        applied[child] = digest
        return live

    def _ensure_finalizer(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if naming.FINALIZER not in finalizers:
            self.kube.set_finalizers(meta["namespace"], meta["name"], [*finalizers, naming.FINALIZER],
                                     meta["resourceVersion"])
            metrics.API_WRITES.labels(kind="finalizer").inc()

    def _secret_problem(self, namespace: str, spec: api.ModelCacheSpec) -> str | None:
        ref = jobs.hub_and_source(spec)[2].tokenSecretRef
        if ref is None:
            return None
        secret = self.kube.get("Secret", ref.name, namespace)
        if secret is None:
            return f"Secret {ref.name} (spec.source tokenSecretRef) not found in namespace {namespace}"
        if ref.key not in (secret.get("data") or {}) and ref.key not in (secret.get("stringData") or {}):
            return f"Secret {ref.name} has no key {ref.key} (spec.source tokenSecretRef.key)"
        return None

    # ----- converge -----

    def _converge(self, body: dict[str, Any], view: ClusterView) -> str:
        meta = body["metadata"]
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 1)
        key = (namespace, name)
        previous = body.get("status") or {}
        pvc_name = naming.pvc_name(name)
        try:
            spec = api.ModelCacheSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            obs = Observation(generation=generation, model=None, pv_name=None, pvc_name=pvc_name, pvc_phase=None,
                              job_name="", job=None, report=None, invalid_spec=validation_message(error),
                              previous=previous)
            return self._write_status(body, obs)

        self._ensure_finalizer(body)
        conflict = storage_conflict(claim_of(body), view.storage_claims)
        if conflict:
            # Another cache had this storage first: create nothing that could write to it.
            obs = Observation(generation=generation, model=jobs.model_label(spec), pv_name=None, pvc_name=pvc_name,
                              pvc_phase=None, job_name="", job=None, report=None, storage_conflict=conflict,
                              previous=previous)
            return self._write_status(body, obs)
        pv = storage.persistent_volume(body, spec)
        pvc = storage.persistent_volume_claim(body, spec)
        if pv:
            self._apply(key, pv)
        pvc_live = self._apply(key, pvc, present=(namespace, pvc_name) in view.pvc_phases)
        pvc_phase = view.pvc_phases.get((namespace, pvc_name)) or \
            (pvc_live or {}).get("status", {}).get("phase")

        fingerprint = naming.source_fingerprint(spec, (meta.get("annotations") or {}).get(naming.ANNOTATION_RETRY))
        job_name = naming.download_job_name(name, fingerprint)
        job = view.jobs.get((namespace, job_name))
        secret_problem = None
        if job is None and pvc_phase == "Bound":
            secret_problem = self._secret_problem(namespace, spec)
            if secret_problem is None:
                for manifest in jobs.downloader_rbac(body):
                    self._apply(key, manifest)
                self._apply(key, jobs.download_job(body, spec, job_name, self.config.image), present=False)
                job = JobObservation(name=job_name, active=True)

        if job is not None:
            self._observe_job_duration(job)
        report_raw = previous.get("download")
        report = api.DownloadReport.model_validate(report_raw) \
            if report_raw and report_raw.get("jobName") == job_name else None
        obs = Observation(
            generation=generation, model=jobs.model_label(spec), pv_name=pv["metadata"]["name"] if pv else None,
            pvc_name=pvc_name, pvc_phase=pvc_phase, job_name=job_name, job=job, report=report,
            secret_problem=secret_problem, previous=previous)
        return self._write_status(body, obs)

    def _observe_job_duration(self, job: JobObservation) -> None:
        """Records each finished download Job once per process (a restart may record a Job again)."""
        if not (job.succeeded or job.failed) or not job.started or not job.finished or job.name in self._timed:
            return
        self._timed.add(job.name)
        seconds = (_parse_time(job.finished) - _parse_time(job.started)).total_seconds()
        metrics.DOWNLOAD_SECONDS.labels(result="succeeded" if job.succeeded else "failed").observe(max(seconds, 0))

    def _write_status(self, body: dict[str, Any], obs: Observation) -> str:
        meta = body["metadata"]
        previous = obs.previous
        key = (meta["namespace"], meta["name"])
        desired = status.desired_status(obs, now_rfc3339())
        written = self._written.get(key)
        if written is not None and written["phase"] == desired["phase"]:
            # Keep transition times from our own last write when the body lags behind it.
            desired = status.desired_status(replace(obs, previous={**previous, **written}), now_rfc3339())
        changed = any(previous.get(k) != v for k, v in desired.items())
        if changed and desired != written:
            self.kube.patch_status(meta["namespace"], meta["name"], desired)
            self._written[key] = desired
            metrics.API_WRITES.labels(kind="status").inc()
            for event_type, reason, message in status.transitions(previous, desired):
                log.info("%s/%s: %s %s", meta["namespace"], meta["name"], reason, message)
                self.emit(body, event_type, reason, message)
        self.phases.set(key, desired["phase"])
        return str(desired["phase"])

    # ----- deletion -----

    def _finalize(self, body: dict[str, Any], view: ClusterView) -> str:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        finalizers = list(meta.get("finalizers") or [])
        if naming.FINALIZER not in finalizers:
            return "Deleting"
        previous = body.get("status") or {}
        pvc_name = naming.pvc_name(name)
        users = view.pods_using.get((namespace, name), [])
        blocked = Observation(generation=meta.get("generation", 1), model=previous.get("model"),
                              pv_name=previous.get("pvName"), pvc_name=pvc_name,
                              pvc_phase=view.pvc_phases.get((namespace, pvc_name)), job_name="", job=None,
                              report=None, deleting=True, deletion_blocked_by=users, previous=previous)
        if users:
            return self._write_status(body, blocked)

        reclaim = ((body.get("spec") or {}).get("storage") or {}).get("reclaimPolicy", "Retain")
        if reclaim == "Delete" and (namespace, pvc_name) in view.pvc_phases:
            cleanup = jobs.cleanup_job(body, self.config.image)
            state = view.jobs.get((namespace, cleanup["metadata"]["name"]))
            if state is None:
                self._apply((namespace, name), cleanup, present=False)
                self.emit(body, "Normal", "CleanupStarted", "removing the cached files before deleting storage")
                return self._write_status(body, blocked)
            if not state.succeeded:
                if state.failed:
                    self.emit(body, "Warning", "CleanupFailed",
                              f"Job {state.name} failed; fix it and delete the Job to retry, or remove the "
                              f"finalizer {naming.FINALIZER} to keep the files")
                return self._write_status(body, blocked)

        self.kube.delete("PersistentVolumeClaim", pvc_name, namespace)
        pv_name = naming.pv_name(namespace, name)
        if (body.get("spec") or {}).get("storage", {}).get("storageClass") is None:
            self.kube.delete("PersistentVolume", pv_name)
        self.kube.set_finalizers(namespace, name, [f for f in finalizers if f != naming.FINALIZER],
                                 meta["resourceVersion"])
        self.emit(body, "Normal", "Deleted",
                  "storage objects removed" + (", files kept (reclaimPolicy Retain)" if reclaim == "Retain" else ""))
        self.forget(namespace, name)
        return "Deleting"
