"""Removes the webhook's scheduling gates from serving pods once their caches published the pinned folder,
and tells the pod why a gate stays. Level-based: every pass reads the pod and its caches as they are now
(builders/gates.py decides), so a missed event or a failed patch costs nothing but latency: the next pod
or cache event, the caches' resync timer, or the operator's start (which lists every pod) does it again.

The patch carries the pod's resourceVersion: gates can only be removed, never added back, so a stale list
must not be written over a newer one. A conflict is dropped; the pod's own update event brings a fresh pass.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client.exceptions import ApiException

from ..api.names import ANN_GATE_STATUS
from ..builders.gates import check_gates, gated_caches
from .kube import Kube, NotLeading

log = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any], str, str, str], None]
PodKey = tuple[str, str]
CacheLookup = Callable[[str, str], Mapping[str, Any] | None]  # (namespace, name) -> ModelCache body


def release(kube: Kube, pod: Mapping[str, Any], caches: Mapping[str, Mapping[str, Any] | None],
            emit: EventSink) -> None:
    """One pass over one pod: remove the gates whose cache is Ready with the pinned folder, record and
    report why the others stay."""
    check = check_gates(pod, caches)
    meta = pod["metadata"]
    annotations = meta.get("annotations") or {}
    status_text = json.dumps(check.reports, sort_keys=True) if check.reports else None
    if not check.remove and annotations.get(ANN_GATE_STATUS) == status_text:
        return
    body: dict[str, Any] = {"metadata": {"resourceVersion": meta["resourceVersion"],
                                         "annotations": {ANN_GATE_STATUS: status_text}}}
    if check.remove:
        body["spec"] = {"schedulingGates": check.remaining(pod) or None}
    try:
        kube.merge_patch("Pod", meta["namespace"], meta["name"], body)
    except ApiException as error:
        if error.status in (404, 409):  # gone, or changed since: its own event brings another pass
            return
        raise
    for cache, commit in sorted(check.released.items()):
        emit(dict(pod), "Normal", "CacheReady",
             f'ModelCache "{cache}" published revision {commit}; scheduling gate removed')
    for text in sorted(check.new_reports(pod).values()):
        reason, _, message = text.partition(": ")
        emit(dict(pod), "Warning", reason, message)


class GateReleaser:
    """Runs `release` in worker threads, at most one pass per pod at a time, coalescing triggers that
    arrive meanwhile into one more pass with the newest pod body."""

    def __init__(self, kube: Callable[[], Kube], emit: EventSink, pool: ThreadPoolExecutor) -> None:
        self._kube, self._emit, self._pool = kube, emit, pool
        self._pending: dict[PodKey, dict[str, Any]] = {}
        self._running: set[PodKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def queue(self, pod: Mapping[str, Any], caches: CacheLookup) -> None:
        if not gated_caches(pod):
            return
        key: PodKey = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self._pending[key] = dict(pod)
        if key not in self._running:
            self._running.add(key)
            task = asyncio.create_task(self._drain(key, caches))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: PodKey, caches: CacheLookup) -> None:
        loop = asyncio.get_running_loop()
        try:
            while key in self._pending:
                pod = self._pending.pop(key)
                # Read in the event loop, where kopf updates the index the lookup reads.
                views = {cache: caches(key[0], cache) for cache in gated_caches(pod).values()}
                context = contextvars.copy_context()
                try:
                    await loop.run_in_executor(self._pool, context.run, release, self._kube(), pod, views,
                                               self._emit)
                except NotLeading:
                    log.info("Gate pass of pod %s/%s stopped: this replica lost the leader Lease", *key)
                except Exception:
                    log.exception("Releasing the scheduling gates of pod %s/%s failed", *key)
        finally:
            self._running.discard(key)
