"""What every kind's reconcile shares: serialised per object, children written with server-side apply only
when their manifest changed or they disappeared, status written only when it differs, and one event per
condition transition. An idle object therefore costs no API request per resync."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ..api.names import FINALIZER
from ..builders import status
from . import metrics
from .config import OperatorConfig
from .kube import Kube

log = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any], str, str, str], None]
ObjectKey = tuple[str, str | None, str]  # (kind, namespace or None, name)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(p) for p in item["loc"])
        parts.append(f"spec.{location}: {item['msg']}")
    return "; ".join(parts)


def _digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def object_key(body: dict[str, Any]) -> ObjectKey:
    meta = body["metadata"]
    return body["kind"], meta.get("namespace"), meta["name"]


class Converger:
    """Base of the per-kind reconcilers. Subclasses implement `converge` (and `finalize` if they own a
    finalizer); `reconcile` is the one entry point."""

    kind: str
    # Status keys another writer owns (the downloader's report): never cleared by this reconciler.
    foreign_status: frozenset[str] = frozenset()

    def __init__(self, kube: Kube, config: OperatorConfig, emit: EventSink):
        self.kube = kube
        self.config = config
        self.emit = emit
        # Per object, the digest of what was last applied per child; lost on restart, which costs one re-apply.
        self._applied: dict[ObjectKey, dict[tuple[str, str], str]] = {}
        # The last status written per object: a reconcile running on a body from before that write must not
        # write (and announce) the same transition again.
        self._written: dict[ObjectKey, dict[str, Any]] = {}
        self._locks: dict[ObjectKey, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Objects the apiserver answered 404 for, by UID: a trigger still holding their body (a resync, or an
        # index that missed the deletion across a watch restart) must not reconcile them again and again.
        self._gone: dict[ObjectKey, str] = {}

    def converge(self, body: dict[str, Any], view: Any) -> str:
        raise NotImplementedError

    def finalize(self, body: dict[str, Any], view: Any) -> str:
        """Kinds without a finalizer of ours just go; their children follow by owner reference."""
        return "Deleting"

    def _lock(self, key: ObjectKey) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def reconcile(self, body: dict[str, Any], view: Any) -> str:
        """Returns the phase written. Serialised per object: timers and watch events may overlap."""
        key = object_key(body)
        started = time.perf_counter()
        with self._lock(key):
            try:
                deleting = bool(body["metadata"].get("deletionTimestamp"))
                phase = self.finalize(body, view) if deleting else self.converge(body, view)
            except ApiException as error:
                if error.status != 409:
                    metrics.RECONCILE_ERRORS.labels(error=f"http{error.status}").inc()
                    metrics.RECONCILES.labels(result="error").inc()
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

    def forget(self, key: ObjectKey) -> None:
        self._applied.pop(key, None)
        self._written.pop(key, None)

    def is_gone(self, body: dict[str, Any]) -> bool:
        uid = body["metadata"].get("uid")
        return uid is not None and self._gone.get(object_key(body)) == uid

    def _mark_gone(self, body: dict[str, Any]) -> None:
        key = object_key(body)
        uid = body["metadata"].get("uid")
        if uid is not None and self._gone.get(key) != uid:
            log.info("%s %s/%s is gone; it is not reconciled again", key[0], key[1] or "", key[2])
            self._gone[key] = uid
        self.forget(key)

    def deleted(self, key: ObjectKey) -> None:
        """Its deletion event came: a new object of the same name is a new object."""
        self.forget(key)
        self._gone.pop(key, None)

    # ----- children -----

    def apply(self, owner: ObjectKey, manifest: dict[str, Any], present: bool = True) -> dict[str, Any] | None:
        """Applies unless the same manifest was already applied and the child still exists."""
        child = (manifest["kind"], manifest["metadata"]["name"])
        applied = self._applied.setdefault(owner, {})
        digest = _digest(manifest)
        if present and applied.get(child) == digest:
            return None
        live = self.kube.apply(manifest)
        metrics.API_WRITES.labels(kind=manifest["kind"]).inc()
        applied[child] = digest
        return live

    def ensure_finalizer(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            self.kube.set_finalizers(self.kind, meta.get("namespace"), meta["name"], [*finalizers, FINALIZER],
                                     meta["resourceVersion"])
            metrics.API_WRITES.labels(kind="finalizer").inc()

    def remove_finalizer(self, body: dict[str, Any]) -> bool:
        """False when the object is already gone: a reconcile of a stale body found our finalizer removed by
        an earlier one, and the deletion complete."""
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        try:
            self.kube.set_finalizers(self.kind, meta.get("namespace"), meta["name"],
                                     [f for f in finalizers if f != FINALIZER], meta["resourceVersion"])
        except ApiException as error:
            if error.status != 404:
                raise
            self._mark_gone(body)
            return False
        return True

    # ----- status -----

    def write_status(self, body: dict[str, Any], build: Callable[[dict[str, Any]], dict[str, Any]]) -> str:
        """`build(previous)` is the pure status builder. Writes a merge patch when the result differs from
        the live status, clearing keys this reconciler wrote before and no longer wants."""
        key = object_key(body)
        previous = body.get("status") or {}
        desired = build(previous)
        written = self._written.get(key)
        if written is not None and written["phase"] == desired["phase"]:
            # Keep transition times from our own last write when the body lags behind it.
            desired = build({**previous, **written})
        stale = {k: None for k in previous if k not in desired and k not in self.foreign_status}
        changed = bool(stale) or any(previous.get(k) != v for k, v in desired.items())
        if changed and desired != written:
            meta = body["metadata"]
            try:
                self.kube.patch_status(self.kind, meta.get("namespace"), meta["name"], {**desired, **stale})
            except ApiException as error:
                if error.status != 404:
                    raise
                # Deleted since this reconcile began: nothing left to describe.
                self._mark_gone(body)
                return str(desired["phase"])
            self._written[key] = desired
            metrics.API_WRITES.labels(kind="status").inc()
            for event_type, reason, message in status.transitions(previous, desired):
                log.info("%s %s/%s: %s %s", self.kind, meta.get("namespace") or "", meta["name"], reason, message)
                self.emit(body, event_type, reason, message)
        return str(desired["phase"])
