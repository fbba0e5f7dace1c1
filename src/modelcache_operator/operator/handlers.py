"""kopf wiring: watches feed indices, and every trigger calls the one reconcile. Handlers stay thin."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf

from ..api import v1alpha1 as api
from ..builders import naming
from ..builders.conflict import claim_of
from ..builders.status import JobObservation
from ..webhook.patch import ANN_CACHES as CACHES_ANNOTATION
from ..webhook.patch import LABEL_INJECT as INJECT_LABEL
from .config import OperatorConfig
from .kube import Kube, load_api_client
from .reconciler import ClusterView, Reconciler, with_termination_message

CONFIG = OperatorConfig.from_env()
MANAGED = {naming.LABEL_MANAGED_BY: naming.MANAGED_BY}
_reconciler: Reconciler | None = None
# kopf types namespace as optional; every resource indexed here is namespaced.
IndexKey = tuple[str | None, str]
# Reconciles block on API calls, so they run in these threads. Everything that reads kopf's indices runs in
# the event loop instead, where kopf updates them: a thread iterating an index while the loop changed it
# failed with "dictionary changed size during iteration" at a few hundred caches.
RECONCILE_WORKERS = 8
_pool = ThreadPoolExecutor(max_workers=RECONCILE_WORKERS, thread_name_prefix="reconcile")
# Per cache, the newest body still to reconcile, and the caches with a reconcile in flight.
_pending: dict[tuple[str, str], dict[str, Any]] = {}
_running: set[tuple[str, str]] = set()
_tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones
log = logging.getLogger(__name__)


def _emit(body: dict[str, Any], event_type: str, reason: str, message: str) -> None:
    kopf.event(kopf.Body(cast(kopf.RawBody, body)), type=event_type, reason=reason, message=message)


def reconciler() -> Reconciler:
    global _reconciler  # noqa: PLW0603 - one reconciler per process, built after kopf logged in
    if _reconciler is None:
        _reconciler = Reconciler(Kube(load_api_client()), CONFIG, _emit)
    return _reconciler


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress and diff-base go to annotations: status belongs to the reconciler and the downloader.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modelcache.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="modelcache.dev")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 8


# ----- indices: what the watches know, so reconciles need no reads -----

def _job_observation(name: str, status: dict[str, Any]) -> JobObservation:
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed")
    return JobObservation(
        name=name,
        started=status.get("startTime"),
        finished=(failed or {}).get("lastTransitionTime") or status.get("completionTime"),
        active=bool(status.get("active")),
        succeeded="Complete" in conditions,
        failed=failed is not None,
        failure_reason=failed.get("reason") if failed else None,
        failure_message=failed.get("message") if failed else None,
    )


# The indices are async, so kopf runs them in the event loop instead of a thread per watch event. Jobs and
# termination messages are keyed by their cache (its label value), so one cache's view is a few O(1) lookups
# instead of a copy of every index: at 500 caches the full copy per reconcile dominated the idle CPU.

@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def job_index(namespace: str | None, name: str, labels: kopf.Labels, status: kopf.Status,
                    **_: Any) -> dict[IndexKey, JobObservation]:
    return {(namespace, labels.get(naming.LABEL_CACHE, "")): _job_observation(name, dict(status))}


@kopf.index("", "v1", "persistentvolumeclaims", labels=MANAGED)
async def pvc_index(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[IndexKey, str]:
    return {(namespace, name): str(status.get("phase", "Pending"))}


@kopf.index("", "v1", "pods", labels={INJECT_LABEL: "true"})
async def pods_using_index(namespace: str | None, name: str, annotations: kopf.Annotations, status: kopf.Status,
                           **_: Any) -> dict[IndexKey, str]:
    if status.get("phase") in ("Succeeded", "Failed"):
        return {}
    caches = [c.strip() for c in annotations.get(CACHES_ANNOTATION, "").split(",") if c.strip()]
    return {(namespace, cache): name for cache in caches}


@kopf.index("", "v1", "pods", labels={**MANAGED, naming.LABEL_ROLE: "downloader"})
async def termination_index(namespace: str | None, labels: kopf.Labels, status: kopf.Status,
                            **_: Any) -> dict[IndexKey, tuple[str, str]]:
    """The downloader writes its failure reason as JSON to the termination log: (Job name, message)."""
    for container in status.get("containerStatuses") or []:
        message = ((container.get("state") or {}).get("terminated") or {}).get("message")
        if message and "job-name" in labels:
            return {(namespace, labels.get(naming.LABEL_CACHE, "")): (labels["job-name"], message)}
    return {}


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
async def cache_index(namespace: str | None, name: str, body: kopf.Body,
                      **_: Any) -> dict[IndexKey, dict[str, Any]]:
    return {(namespace, name): dict(body)}


def _view(body: dict[str, Any], indices: dict[str, Any]) -> ClusterView:
    """What the watches know about one cache. Runs in the event loop, where kopf changes the indices."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    owner = (namespace, naming.label_value(name))
    messages: dict[str, str] = {}
    for job_name, message in indices["termination_index"].get(owner, ()):
        messages.setdefault(job_name, message)
    pvc_key = (namespace, naming.pvc_name(name))
    pvc_store = indices["pvc_index"].get(pvc_key)
    pvc_phases = {pvc_key: next(iter(pvc_store))} if pvc_store else {}
    users = indices["pods_using_index"].get((namespace, name))
    # Storage is only claimed before the cache has its PVC; after that, it keeps what it has.
    claims = () if pvc_phases else tuple(
        claim_of(next(iter(store))) for store in indices["cache_index"].values() if store)
    return ClusterView(
        jobs={(namespace, job.name): with_termination_message(job, [messages[job.name]] if job.name in messages
                                                              else None)
              for job in indices["job_index"].get(owner, ())},
        pvc_phases=pvc_phases,
        pods_using={(namespace, name): sorted(users)} if users else {},
        storage_claims=claims,
    )


# ----- triggers: every one of them runs the same level-based reconcile -----

async def _reconcile(body: dict[str, Any], indices: dict[str, Any]) -> None:
    """Queues a reconcile of body's cache and returns at once. Triggers that arrive while that cache's
    reconcile is in flight are coalesced into one more pass with the newest body, so a busy cache never
    queues stale bodies, each holding a worker thread while it waits for the per-cache lock. Not awaiting
    the reconcile also frees kopf's worker for the cache, which then applies the next watch event to the
    indices (the webhook reads them) instead of waiting for our API writes."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    _pending[key] = body
    if key not in _running:
        _running.add(key)
        task = asyncio.create_task(_drain(key, indices))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


async def _drain(key: tuple[str, str], indices: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    try:
        while key in _pending:
            current = _pending.pop(key)
            # In kopf's context, as kopf runs sync handlers: kopf.event() from the thread needs its settings.
            context = contextvars.copy_context()
            try:
                await loop.run_in_executor(_pool, context.run, reconciler().reconcile, current,
                                           _view(current, indices))
            except Exception:
                # The next trigger or resync reconciles the cache again; the error is counted in metrics.
                log.exception("Reconcile of %s/%s failed", *key)
    finally:
        _running.discard(key)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def on_cache_event(type: str, body: kopf.Body, **kwargs: Any) -> None:
    if type == "DELETED":
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        _pending.pop(key, None)
        reconciler().forget(*key)
        return
    await _reconcile(dict(body), kwargs)


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=CONFIG.resync_seconds, initial_delay=1.0)
async def resync(body: kopf.Body, **kwargs: Any) -> None:
    await _reconcile(dict(body), kwargs)


async def _reconcile_cache(namespace: str, cache: str, indices: dict[str, Any]) -> None:
    """A child changed: reconcile its cache now instead of at the next resync."""
    store = indices["cache_index"].get((namespace, cache))
    if store:
        await _reconcile(next(iter(store)), indices)


def _owner_cache(owner_references: list[dict[str, Any]]) -> str | None:
    return next((o["name"] for o in owner_references if o.get("kind") == api.KIND), None)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("", "v1", "persistentvolumeclaims", labels=MANAGED)
async def on_child_event(namespace: str | None, meta: kopf.Meta, **kwargs: Any) -> None:
    cache = _owner_cache(list(meta.get("ownerReferences") or []))
    if cache and namespace:
        await _reconcile_cache(namespace, cache, kwargs)


@kopf.on.event("", "v1", "pods", labels={INJECT_LABEL: "true"})
async def on_serving_pod_event(type: str, namespace: str | None, annotations: kopf.Annotations,
                               **kwargs: Any) -> None:
    # Only a pod going away can unblock a deletion that waits for users.
    if type != "DELETED" or namespace is None:
        return
    for cache in annotations.get(CACHES_ANNOTATION, "").split(","):
        store = kwargs["cache_index"].get((namespace, cache.strip()))
        if store and next(iter(store))["metadata"].get("deletionTimestamp"):
            await _reconcile_cache(namespace, cache.strip(), kwargs)
