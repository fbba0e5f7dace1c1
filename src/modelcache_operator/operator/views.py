"""What the operator's watches know, cut down to what one object's reconcile needs. Built in the event loop
from kopf's indices, so reconciles (in threads) never read the API or iterate an index kopf is changing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api import v1alpha2 as api
from ..builders.status import JobObservation


@dataclass(frozen=True)
class StoreEntry:
    body: dict[str, Any]
    spec: api.ModelStoreSpec | None  # None when it does not parse


@dataclass(frozen=True)
class CacheView:
    stores: Mapping[str, StoreEntry] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] | None = None  # None: the namespace is not known (yet)
    pvc_phases: Mapping[str, str] = field(default_factory=dict)  # claim name -> phase, in the cache's namespace
    downloads: Mapping[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (ns, name) -> status
    # (ns, name) -> spec.requestedBy: the cache whose request started each download
    download_requesters: Mapping[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class DownloadView:
    store: StoreEntry | None
    job: JobObservation | None = None
    cleanup_job: JobObservation | None = None
    check_jobs: tuple[JobObservation, ...] = ()  # upstream-check Jobs that still exist
    config_error: str | None = None  # why the kubelet cannot start the running Job's pod (a missing Secret)
    wanted_by: tuple[str, ...] = ()  # caches ("ns/name") that want it or serve from it
    used_by: tuple[str, ...] = ()  # pods ("ns/name") pinned to it
    newer_published: int = 0  # published downloads of the same model on the store, newer than this one
    twin_alive: bool = False  # another live download has the same folder and revision
    quota_free_bytes: int | None = None  # what the store's quota leaves for a new download
    folder_writer: str | None = None  # another download whose Job is writing this one's folder now


@dataclass(frozen=True)
class Eviction:
    namespace: str
    name: str
    size: int
    unused_since: str


@dataclass(frozen=True)
class StoreView:
    others: Mapping[str, StoreEntry] = field(default_factory=dict)
    writer_claim_phase: str | None = None
    published_bytes: int = 0
    published_count: int = 0
    in_flight_bytes: int = 0  # planned sizes of downloads not yet published
    evictable: tuple[Eviction, ...] = ()  # published, unused, least recently used first
