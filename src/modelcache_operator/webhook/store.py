"""The webhook process's views of the cluster: list-then-watch loops in background threads.

Admission must answer in milliseconds, so it never calls the apiserver: it reads these in-memory views of
ModelCaches (per watched scope), ModelStores and Namespace labels. Each object is parsed once, when its
event arrives, not once per admission request.

Each watch is cut by the server every WATCH_SECONDS and reopened from the last resourceVersion, so a healthy
feed hears from the apiserver at least that often even when nothing changes. A feed that heard nothing for
STALE_SECONDS (a replica cut off from the apiserver) makes the replica unready (`AdmissionViews.ready`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ..api import v1alpha2 as api
from .pinning import CacheView

log = logging.getLogger(__name__)
CacheKey = tuple[str, str]  # (namespace, name)
WATCH_SECONDS = 10  # the server ends each watch after this; it is reopened from the last resourceVersion
RELIST_SECONDS = 300  # then relist: a fresh list also repairs anything a watch gap could have missed
STALE_SECONDS = 30.0  # the readiness bound: a feed silent this long is cut off
READ_TIMEOUT_SECONDS = WATCH_SECONDS + 10  # a black-holed connection errors instead of hanging the feed
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


class Contact:
    """When each feed last heard from the apiserver: a list, an event, or the end of a watch the server cut."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._heard: dict[str, float] = {}

    def heard(self, feed: str) -> None:
        with self._lock:
            self._heard[feed] = self.clock()

    def silent(self, bound: float = STALE_SECONDS) -> list[str]:
        """The feeds that heard nothing for longer than `bound` (a feed never heard from is not synced)."""
        now = self.clock()
        with self._lock:
            return sorted(feed for feed, at in self._heard.items() if now - at > bound)


@dataclass
class AdmissionViews:
    """Everything admission reads. Synced once every view has listed once (caches: every scope)."""

    caches: ModelCacheStore
    stores: ModelStoreView
    namespaces: NamespaceView
    cache_scopes: int = 1
    contact: Contact = field(default_factory=Contact)

    @classmethod
    def empty(cls, cache_scopes: int = 1) -> AdmissionViews:
        return cls(ModelCacheStore(), ModelStoreView(), NamespaceView(), cache_scopes)

    def synced(self) -> bool:
        return self.caches.synced(self.cache_scopes) and self.stores.synced() and self.namespaces.synced()

    def unready_reason(self) -> str | None:
        """None when this replica may take admission traffic: every view listed, and none is cut off."""
        if not self.synced():
            return "admission views not synced"
        silent = self.contact.silent()
        return f"no contact with the apiserver for over {STALE_SECONDS:.0f}s: {', '.join(silent)}" if silent else None

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


def run_watch(view: Watched, feed: Feed, stopped: Callable[[], bool], contact: Contact | None = None) -> None:
    """List, then watch in WATCH_SECONDS pieces from the last resourceVersion, relisting every RELIST_SECONDS
    and after errors (with backoff). Runs until `stopped()`; meant for a daemon thread."""
    contact = contact or Contact()
    failures = 0
    while not stopped():
        try:
            listed = feed.plain(feed.lister(_request_timeout=READ_TIMEOUT_SECONDS))
            view.replace_scope(feed.scope, listed.get("items") or [])
            contact.heard(feed.what)
            failures = 0
            version = listed["metadata"]["resourceVersion"]
            relist_at = time.monotonic() + RELIST_SECONDS
            while time.monotonic() < relist_at:
                watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
                for event in watch.stream(  # type: ignore[no-untyped-call]
                        feed.lister, resource_version=version, timeout_seconds=WATCH_SECONDS,
                        _request_timeout=READ_TIMEOUT_SECONDS):
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        view.apply_event(event["type"], feed.plain(event["object"]))
                    contact.heard(feed.what)
                    if stopped():
                        return
                # The server ended the watch on time: contact, and the place to resume from.
                contact.heard(feed.what)
                version = getattr(watch, "resource_version", None) or version
                if stopped():
                    return
        except (ApiException, OSError, ValueError, urllib3.exceptions.HTTPError) as error:
            # ApiException 410 (expired resourceVersion) lands here too: the relist is the recovery.
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            failures += 1
            log.warning("%s watch failed, relisting in %.1fs: %s", feed.what, delay,
                        getattr(error, "reason", None) or error)
            time.sleep(delay)  # a background thread, not a handler: nothing else waits on it
