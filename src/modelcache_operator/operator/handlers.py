"""kopf wiring: watches feed indices, and every trigger queues the one reconcile of the object it concerns.
Handlers stay thin. Every replica watches and indexes; only the holder of the leader Lease reconciles
(leadership.py)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf

from ..api import v1alpha2 as api
from ..api.names import LABEL_CACHE_NAMESPACE, LABEL_INJECT, LABEL_ROLE
from ..builders.compile_cache import FOLDER_JOB_ROLE
from ..builders.pins import pinned_downloads
from . import observe
from .caches import CacheReconciler
from .config import OperatorConfig
from .converge import Converger, ObjectKey
from .downloads import DownloadReconciler
from .gates import CacheLookup, GateReleaser
from .indices import MANAGED, IndexKey  # importing it registers the kopf indices
from .kube import Kube, NotLeading, load_api_client
from .leadership import Leadership
from .stores import StoreReconciler
from .views import StoreEntry

CONFIG = OperatorConfig.from_env()
# Reconciles block on API calls, so they run in these threads. Everything that reads kopf's indices runs in
# the event loop instead, where kopf updates them: a thread iterating an index while the loop changed it
# failed with "dictionary changed size during iteration" at a few hundred caches.
RECONCILE_WORKERS = 8
_pool = ThreadPoolExecutor(max_workers=RECONCILE_WORKERS, thread_name_prefix="reconcile")
# Per object, the newest body still to reconcile, and the objects with a reconcile in flight.
_pending: dict[ObjectKey, dict[str, Any]] = {}
_running: set[ObjectKey] = set()
_store_states: dict[str, tuple[Any, ...]] = {}  # what caches saw of each store, last time
_tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones
_reconcilers: dict[str, Converger] = {}
# kopf's live indices (the same objects in every handler call): what a new leader reconciles at once.
_indices: dict[str, Any] = {}
LEADERSHIP = Leadership(CONFIG)
# Run first when kopf shuts down (cli.py starts the webhook's drain here), while the Lease is handed over.
ON_SHUTDOWN: list[Callable[[], None]] = []
log = logging.getLogger(__name__)


def _emit(body: dict[str, Any], event_type: str, reason: str, message: str) -> None:
    if LEADERSHIP.leading():
        kopf.event(kopf.Body(cast(kopf.RawBody, body)), type=event_type, reason=reason, message=message)


def _kube() -> Kube:
    return reconciler(api.KIND).kube


_gates = GateReleaser(_kube, _emit, _pool)


def reconciler(kind: str) -> Converger:
    """One reconciler per kind and leadership term, built after kopf logged in."""
    if not _reconcilers:
        kube = Kube(load_api_client(), may_write=LEADERSHIP.leading)
        for cls in (StoreReconciler, CacheReconciler, DownloadReconciler):
            _reconcilers[cls.kind] = cls(kube, CONFIG, _emit)
        stores = cast(StoreReconciler, _reconcilers[api.STORE_KIND])
        stores.remover = cast(DownloadReconciler, _reconcilers[api.DOWNLOAD_KIND])
    return _reconcilers[kind]


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress and diff-base go to annotations: status belongs to the reconcilers and the downloader.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modelcache.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="modelcache.dev")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 8
    LEADERSHIP.start(asyncio.get_running_loop(), on_started=_lead, on_stopped=_follow)


@kopf.on.cleanup()
async def hand_over(**_: Any) -> None:
    """On SIGTERM: stop reconciling, let the running reconciles end, release the Lease."""
    for hook in ON_SHUTDOWN:
        hook()
    await LEADERSHIP.stop(in_flight=lambda: len(_running))


async def _lead() -> None:
    """A new term starts from no memory of what was applied (the last leader may have changed anything)
    and reconciles every object once: level-based, so whatever the last leader left half done converges."""
    _reconcilers.clear()
    _store_states.clear()
    for name in ("store_index", "download_index", "cache_index"):
        for entries in list(_indices.get(name, {}).values()):
            for entry in entries:
                await _reconcile(entry.body if isinstance(entry, StoreEntry) else entry, _indices)
    if "gated_pods" in _indices:  # and gives every gated pod a pass: the last leader may have missed its cache
        lookup = _cache_lookup(_indices)
        for pods in list(_indices["gated_pods"].values()):
            for pod in pods:
                await _gates.queue(pod, lookup)


def _follow() -> None:
    _pending.clear()


def _cache_lookup(indices: dict[str, Any], deleted: IndexKey | None = None) -> CacheLookup:
    """Caches as the index has them; `deleted` is gone even if the index still lists it."""
    def lookup(namespace: str, name: str) -> dict[str, Any] | None:
        if (namespace, name) == deleted:
            return None
        body: dict[str, Any] | None = observe.first(indices["cache_index"], (namespace, name))
        return body
    return lookup


VIEWS = {api.KIND: observe.cache_view, api.DOWNLOAD_KIND: observe.download_view,
         api.STORE_KIND: observe.store_view}


# ----- triggers: every one of them runs the same level-based reconcile -----

async def _reconcile(body: dict[str, Any], indices: dict[str, Any]) -> None:
    """Queues a reconcile of body's object and returns at once. Triggers that arrive while that object's
    reconcile is in flight are coalesced into one more pass with the newest body, so a busy object never
    queues stale bodies, each holding a worker thread while it waits for the per-object lock. Not awaiting
    the reconcile also frees kopf's worker, which then applies the next watch event to the indices."""
    if not _indices:
        _indices.update({name: index for name, index in indices.items() if isinstance(index, kopf.Index)})
    if not LEADERSHIP.leading():
        return
    key: ObjectKey = (body["kind"], body["metadata"].get("namespace"), body["metadata"]["name"])
    if reconciler(key[0]).is_gone(body):
        return
    _pending[key] = body
    if key not in _running:
        _running.add(key)
        task = asyncio.create_task(_drain(key, indices))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


async def _drain(key: ObjectKey, indices: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    try:
        while key in _pending and LEADERSHIP.leading():
            current = _pending.pop(key)
            # In kopf's context, as kopf runs sync handlers: kopf.event() from the thread needs its settings.
            context = contextvars.copy_context()
            try:
                await loop.run_in_executor(_pool, context.run, reconciler(key[0]).reconcile, current,
                                           VIEWS[key[0]](current, indices, CONFIG.operator_namespace))
            except NotLeading:
                log.info("Reconcile of %s %s/%s stopped: this replica lost the leader Lease", *key)
            except Exception:
                # The next trigger or resync reconciles the object again; the error is counted in metrics.
                log.exception("Reconcile of %s %s/%s failed", *key)
    finally:
        _running.discard(key)


async def _reconcile_cached(index: Any, key: Any, indices: dict[str, Any]) -> None:
    body = observe.first(index, key)
    if body is not None:
        await _reconcile(body, indices)


async def _on_object_event(type: str, body: kopf.Body, indices: dict[str, Any]) -> None:
    if type == "DELETED":
        key: ObjectKey = (body["kind"], body["metadata"].get("namespace"), body["metadata"]["name"])
        _pending.pop(key, None)
        reconciler(key[0]).deleted(key)
        return
    await _reconcile(dict(body), indices)


async def _release_gates_of(cache: kopf.Body, indices: dict[str, Any], deleted: bool = False) -> None:
    if not LEADERSHIP.leading():  # gates are written by the leader only, as every child
        return
    key: IndexKey = (cache["metadata"].get("namespace"), cache["metadata"]["name"])
    lookup = _cache_lookup(indices, deleted=key if deleted else None)
    for pod in list(indices["gated_pods"].get(key, ())):
        await _gates.queue(pod, lookup)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def on_cache_event(type: str, body: kopf.Body, status: kopf.Status, **kwargs: Any) -> None:
    await _on_object_event(type, body, kwargs)
    # Pods gated on this cache: Ready lifts their gate, a failure or deletion is reported to them.
    await _release_gates_of(body, kwargs, deleted=type == "DELETED")
    if type == "DELETED":
        # Its downloads may have lost their last cache.
        for ref in (status.get("downloadRef") or {}, status.get("servedFrom") or {}):
            if ref.get("name"):
                await _reconcile_cached(kwargs["download_index"], (ref["namespace"], ref["name"]), kwargs)


@kopf.on.event(api.GROUP, api.VERSION, api.DOWNLOAD_PLURAL)
async def on_download_event(type: str, body: kopf.Body, namespace: str | None, name: str, **kwargs: Any) -> None:
    await _on_object_event(type, body, kwargs)
    # Every cache that wants this download reads its status.
    for cache in kwargs["caches_by_download"].get((namespace, name), ()):
        await _reconcile_cached(kwargs["cache_index"], cache, kwargs)
    store = observe.first(kwargs["store_index"], (body.get("spec") or {}).get("store"))
    if store is not None:
        await _reconcile(store.body, kwargs)


@kopf.on.event(api.GROUP, api.VERSION, api.STORE_PLURAL)
async def on_store_event(type: str, body: kopf.Body, name: str, **kwargs: Any) -> None:
    await _on_object_event(type, body, kwargs)
    # Caches read a store's spec, existence and validity, not its usage figures: a status write that only
    # moved `usedBytes` (one per published download) must not reconcile every cache on the store.
    seen = (body["metadata"].get("generation"), bool(body["metadata"].get("deletionTimestamp")),
            (body.get("status") or {}).get("phase"))
    if _store_states.get(name) == seen and type != "DELETED":
        return
    _store_states[name] = seen
    for entries in list(kwargs["cache_index"].values()):
        for cache in entries:
            status, spec = cache.get("status") or {}, cache.get("spec") or {}
            if spec.get("store") in (None, name) or status.get("store") == name:
                await _reconcile(cache, kwargs)


@kopf.on.event("", "v1", "namespaces")
async def on_namespace_event(type: str, name: str, **kwargs: Any) -> None:
    # A namespace's labels decide which stores its caches may use.
    for (namespace, _), entries in list(kwargs["cache_index"].items()):
        if namespace == name:
            for cache in entries:
                await _reconcile(cache, kwargs)


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=CONFIG.resync_seconds, initial_delay=1.0)
@kopf.timer(api.GROUP, api.VERSION, api.DOWNLOAD_PLURAL, interval=CONFIG.resync_seconds, initial_delay=1.0)
@kopf.timer(api.GROUP, api.VERSION, api.STORE_PLURAL, interval=CONFIG.resync_seconds, initial_delay=1.0)
async def resync(body: kopf.Body, **kwargs: Any) -> None:
    await _reconcile(dict(body), kwargs)
    if body["kind"] == api.KIND:
        # Gate passes are level-based too: one that failed (say a 500) is retried here.
        await _release_gates_of(body, kwargs)


def _owner(owner_references: list[dict[str, Any]], kind: str) -> str | None:
    return next((o["name"] for o in owner_references if o.get("kind") == kind), None)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def on_job_event(namespace: str | None, meta: kopf.Meta, labels: kopf.Labels, **kwargs: Any) -> None:
    download = _owner(list(meta.get("ownerReferences") or []), api.DOWNLOAD_KIND)
    if download and namespace:
        await _reconcile_cached(kwargs["download_index"], (namespace, download), kwargs)
    if labels.get(LABEL_ROLE) == FOLDER_JOB_ROLE:
        # A namespace's compile folder exists now: its caches name the compile claim.
        for (cache_namespace, _), entries in list(kwargs["cache_index"].items()):
            if cache_namespace == labels.get(LABEL_CACHE_NAMESPACE):
                for cache in entries:
                    await _reconcile(cache, kwargs)


@kopf.on.event("", "v1", "persistentvolumeclaims", labels=MANAGED)
async def on_claim_event(namespace: str | None, meta: kopf.Meta, **kwargs: Any) -> None:
    owners = list(meta.get("ownerReferences") or [])
    cache = _owner(owners, api.KIND)
    if cache and namespace:
        await _reconcile_cached(kwargs["cache_index"], (namespace, cache), kwargs)
    store = _owner(owners, api.STORE_KIND)
    if store and namespace == CONFIG.operator_namespace:
        entry = observe.first(kwargs["store_index"], store)
        if entry is not None:
            await _reconcile(entry.body, kwargs)
    elif store and namespace:
        # A storageClass store's claim in a team's namespace: its caches wait for it.
        for (cache_namespace, _), entries in list(kwargs["cache_index"].items()):
            if cache_namespace == namespace:
                for cache in entries:
                    await _reconcile(cache, kwargs)


@kopf.on.event("", "v1", "pods", labels={LABEL_INJECT: "true"})
async def on_serving_pod_event(type: str, body: kopf.Body, annotations: kopf.Annotations, status: kopf.Status,
                               **kwargs: Any) -> None:
    if type != "DELETED" and LEADERSHIP.leading():
        await _gates.queue(dict(body), _cache_lookup(kwargs))
    # A pod going away may leave a folder unused: its downloads start their retention clock.
    if type != "DELETED" and status.get("phase") not in ("Succeeded", "Failed"):
        return
    for ref in sorted(pinned_downloads(annotations)):
        namespace, name = ref.split("/", 1)
        await _reconcile_cached(kwargs["download_index"], (namespace, name), kwargs)
