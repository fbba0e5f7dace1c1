"""The webhook process's view of ModelCaches: a list-then-watch loop per scope, in a background thread.

Admission must answer in milliseconds, so it never calls the apiserver: it reads this in-memory view.
Each cache is parsed once, when its event arrives, not once per admitted pod.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ..api import v1alpha1 as api
from .patch import CacheView

log = logging.getLogger(__name__)
CacheKey = tuple[str, str]  # (namespace, name)
WATCH_SECONDS = 300  # then relist: a fresh list also repairs anything a watch gap could have missed
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class StoredCache:
    spec: Mapping[str, Any]
    view: CacheView | None  # None when the object does not parse: mutate_pod treats it as missing


def parse(obj: Mapping[str, Any]) -> StoredCache:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    try:
        view: CacheView | None = CacheView(
            name=str(meta.get("name")), spec=api.ModelCacheSpec.model_validate(spec),
            status=api.ModelCacheStatus.model_validate(obj.get("status") or {}))
    except ValidationError:
        view = None
    return StoredCache(spec=spec, view=view)


class ModelCacheStore:
    """Thread-safe (namespace, name) -> StoredCache, kept current by `run_watch` threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caches: dict[CacheKey, StoredCache] = {}
        self._synced: set[str] = set()  # scopes whose first list has landed

    def view(self, namespace: str, name: str) -> CacheView | None:
        with self._lock:
            stored = self._caches.get((namespace, name))
        return stored.view if stored else None

    def specs(self) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        with self._lock:
            items = list(self._caches.items())
        return ((ns, name, stored.spec) for (ns, name), stored in items)

    def synced(self, scopes: int) -> bool:
        with self._lock:
            return len(self._synced) >= scopes

    def replace_scope(self, scope: str, objects: list[Mapping[str, Any]]) -> None:
        parsed = {_key(obj): parse(obj) for obj in objects}
        with self._lock:
            for key in [k for k in self._caches if scope in ("", k[0])]:
                del self._caches[key]
            self._caches.update(parsed)
            self._synced.add(scope)

    def apply_event(self, event_type: str, obj: Mapping[str, Any]) -> None:
        key = _key(obj)
        stored = None if event_type == "DELETED" else parse(obj)
        with self._lock:
            if stored is None:
                self._caches.pop(key, None)
            else:
                self._caches[key] = stored


def _key(obj: Mapping[str, Any]) -> CacheKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def run_watch(store: ModelCacheStore, client: kubernetes.client.ApiClient, namespace: str,
              stopped: Callable[[], bool]) -> None:
    """List, then watch until the server ends the watch, then relist; retries with backoff on errors.
    `namespace` "" means cluster-wide. Runs until `stopped()`; meant for a daemon thread."""
    objects = kubernetes.client.CustomObjectsApi(client)
    failures = 0

    def listing(**kwargs: Any) -> Any:
        if namespace:
            return objects.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, **kwargs)
        return objects.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL, **kwargs)

    while not stopped():
        try:
            listed = listing()
            store.replace_scope(namespace, listed.get("items") or [])
            failures = 0
            watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            events = watch.stream(  # type: ignore[no-untyped-call]
                listing, resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=WATCH_SECONDS)
            for event in events:
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    store.apply_event(event["type"], event["object"])
                if stopped():
                    return
        except (ApiException, OSError, ValueError, urllib3.exceptions.HTTPError) as error:
            # ApiException 410 (expired resourceVersion) lands here too: the relist is the recovery.
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            failures += 1
            log.warning("ModelCache watch (%s) failed, relisting in %.1fs: %s",
                        namespace or "all namespaces", delay, getattr(error, "reason", None) or error)
            time.sleep(delay)  # a background thread, not a handler: nothing else waits on it
