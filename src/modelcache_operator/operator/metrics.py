"""Prometheus metrics served on /metrics."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter("modelcache_reconcile_total", "Reconciles of ModelCaches.", ["result"], registry=REGISTRY)
RECONCILE_ERRORS = Counter("modelcache_reconcile_errors_total", "Reconciles that raised, by exception type.",
                           ["error"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram("modelcache_reconcile_duration_seconds", "Time spent in one reconcile.",
                              registry=REGISTRY, buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
DOWNLOAD_SECONDS = Histogram("modelcache_download_job_duration_seconds",
                             "Download Job duration, from creation to completion or failure.", ["result"],
                             registry=REGISTRY, buckets=(10, 30, 60, 300, 900, 1800, 3600, 7200, 21600))
API_WRITES = Counter("modelcache_api_writes_total", "Writes the operator sent to the apiserver.", ["kind"],
                     registry=REGISTRY)
REVISIONS_REMOVED = Counter("modelcache_revisions_removed_total",
                            "Revision folders removed by a store's retention: ttl or quota (LRU eviction).",
                            ["store", "reason"], registry=REGISTRY)
CACHES = Gauge("modelcache_caches", "ModelCaches by phase.", ["phase"], registry=REGISTRY)

PHASES = ("Pending", "Provisioning", "Downloading", "Verifying", "Ready", "Failed", "Deleting")


class PhaseTracker:
    """Remembers each cache's phase so the gauge counts caches, not transitions."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def set(self, key: tuple[str, str], phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._phases.pop(key, None)
            else:
                self._phases[key] = phase
            counts = dict.fromkeys(PHASES, 0)
            for value in self._phases.values():
                counts[value] = counts.get(value, 0) + 1
        for name, count in counts.items():
            CACHES.labels(phase=name).set(count)
