"""The webhook process's views of the cluster: list-then-watch loops in background threads.

Admission must answer in milliseconds, so it never calls the apiserver: it reads these in-memory views of
ModelCaches (per watched scope), ModelStores and Namespace labels. Each object is parsed once, when its
event arrives, not once per admission request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ..api import v1alpha2 as api
from .pinning import CacheView

log = logging.getLogger(__name__)
CacheKey = tuple[str, str]  # (namespace, name)
WATCH_SECONDS = 300  # then relist: a fresh list also repairs anything a watch gap could have missed
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def parse_cache(obj: Mapping[str, Any]) -> CacheView | None:
    """None when the object does not parse: mutate_pod treats it as missing."""
    try:
        return CacheView(
            name=str(_meta(obj).get("name")),
            spec=api.ModelCacheSpec.from_api(obj.get("spec") or {}),
            status=api.ModelCacheStatus.from_api(obj.get("status") or {}),
        )
    except ValidationError:
        return None


def parse_store(obj: Mapping[str, Any]) -> api.ModelStoreSpec | None:
    try:
        return api.ModelStoreSpec.from_api(obj.get("spec") or {})
    except ValidationError:
        return None


def parse_namespace(obj: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (_meta(obj).get("labels") or {}).items()}


class Watched(Protocol):
    """What `run_watch` feeds."""

    def replace_scope(self, scope: str, objects: list[Mapping[str, Any]]) -> None: ...

    def apply_event(self, event_type: str, obj: Mapping[str, Any]) -> None: ...


class View(Generic[K, V]):
    """Thread-safe key -> parsed value, kept current by `run_watch` threads, one per scope.

    A scope is a namespace, or "" for cluster-wide (every key). `version` grows with every change."""

    def __init__(
        self,
        key: Callable[[Mapping[str, Any]], K],
        parse: Callable[[Mapping[str, Any]], V],
        in_scope: Callable[[str, K], bool] = lambda scope, key: True,
    ) -> None:
        self._key, self._parse, self._in_scope = key, parse, in_scope
        self._lock = threading.Lock()
        self._items: dict[K, V] = {}
        self._synced: set[str] = set()  # scopes whose first list has landed
        self.version = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._items.get(key)

    def snapshot(self) -> dict[K, V]:
        with self._lock:
            return dict(self._items)

    def synced(self, scopes: int = 1) -> bool:
        with self._lock:
            return len(self._synced) >= scopes

    def replace_scope(self, scope: str, objects: list[Mapping[str, Any]]) -> None:
        parsed = {self._key(obj): self._parse(obj) for obj in objects}
        with self._lock:
            for key in [k for k in self._items if scope == "" or self._in_scope(scope, k)]:
                del self._items[key]
            self._items.update(parsed)
            self._synced.add(scope)
            self.version += 1

    def apply_event(self, event_type: str, obj: Mapping[str, Any]) -> None:
        key = self._key(obj)
        if event_type == "DELETED":
            with self._lock:
                self._items.pop(key, None)
                self.version += 1
            return
        value = self._parse(obj)
        with self._lock:
            self._items[key] = value
            self.version += 1


def _cache_key(obj: Mapping[str, Any]) -> CacheKey:
    return str(_meta(obj).get("namespace")), str(_meta(obj).get("name"))


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name"))


class ModelCacheStore(View[CacheKey, CacheView | None]):
    """(namespace, name) -> CacheView, None for a cache whose object does not parse."""

    def __init__(self) -> None:
        super().__init__(_cache_key, parse_cache, lambda scope, key: key[0] == scope)

    def view(self, namespace: str, name: str) -> CacheView | None:
        return self.get((namespace, name))


class ModelStoreView(View[str, api.ModelStoreSpec | None]):
    """ModelStore name -> parsed spec, None for a store whose spec does not parse (it still exists)."""

    def __init__(self) -> None:
        super().__init__(_name, parse_store)


class NamespaceView(View[str, dict[str, str]]):
    """Namespace name -> labels."""

    def __init__(self) -> None:
        super().__init__(_name, parse_namespace)

    def labels(self, name: str) -> dict[str, str] | None:
        return self.get(name)


@dataclass
class AdmissionViews:
    """Everything admission reads. Synced once every view has listed once (caches: every scope)."""

    caches: ModelCacheStore
    stores: ModelStoreView
    namespaces: NamespaceView
    cache_scopes: int = 1

    @classmethod
    def empty(cls, cache_scopes: int = 1) -> AdmissionViews:
        return cls(ModelCacheStore(), ModelStoreView(), NamespaceView(), cache_scopes)

    def synced(self) -> bool:
        return self.caches.synced(self.cache_scopes) and self.stores.synced() and self.namespaces.synced()

    def version(self) -> int:
        return self.caches.version + self.stores.version + self.namespaces.version


# ----- feeds -----


@dataclass(frozen=True)
class Feed:
    """One list-then-watch: a list function (which also takes the watch arguments) and its scope."""

    what: str  # for logs, e.g. "ModelCaches in llm"
    lister: Callable[..., Any]
    scope: str = ""
    # Typed clients (CoreV1Api) return model objects; custom objects arrive as dicts already.
    plain: Callable[[Any], Any] = lambda obj: obj


def modelcache_feed(client: kubernetes.client.ApiClient, namespace: str) -> Feed:
    """ModelCaches in `namespace`, "" for all namespaces."""
    objects = kubernetes.client.CustomObjectsApi(client)

    def listing(**kwargs: Any) -> Any:
        if namespace:
            return objects.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, **kwargs)
        return objects.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL, **kwargs)

    return Feed(f"ModelCaches in {namespace or 'all namespaces'}", listing, namespace)


def modelstore_feed(client: kubernetes.client.ApiClient) -> Feed:
    objects = kubernetes.client.CustomObjectsApi(client)

    def listing(**kwargs: Any) -> Any:
        return objects.list_cluster_custom_object(api.GROUP, api.VERSION, api.STORE_PLURAL, **kwargs)

    return Feed("ModelStores", listing)


def namespace_feed(client: kubernetes.client.ApiClient) -> Feed:
    core = kubernetes.client.CoreV1Api(client)
    return Feed("Namespaces", core.list_namespace, plain=client.sanitize_for_serialization)


def run_watch(view: Watched, feed: Feed, stopped: Callable[[], bool]) -> None:
    """List, then watch until the server ends the watch, then relist; retries with backoff on errors.
    Runs until `stopped()`; meant for a daemon thread."""
    failures = 0
    while not stopped():
        try:
            listed = feed.plain(feed.lister())
            view.replace_scope(feed.scope, listed.get("items") or [])
            failures = 0
            watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            events = watch.stream(  # type: ignore[no-untyped-call]
                feed.lister, resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=WATCH_SECONDS
            )
            for event in events:
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    view.apply_event(event["type"], feed.plain(event["object"]))
                if stopped():
                    return
        except (ApiException, OSError, ValueError, urllib3.exceptions.HTTPError) as error:
            # ApiException 410 (expired resourceVersion) lands here too: the relist is the recovery.
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            failures += 1
            log.warning("%s watch failed, relisting in %.1fs: %s", feed.what, delay,
                        getattr(error, "reason", None) or error)
            time.sleep(delay)  # a background thread, not a handler: nothing else waits on it
