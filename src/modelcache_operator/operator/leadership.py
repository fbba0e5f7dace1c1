"""Which replica reconciles: the Lease elector (lease.py) in a thread, wired to kopf's event loop.

Every replica runs kopf's watches and indices, so a follower that takes over starts from warm views and
reconciles everything at once; only the leader queues reconciles and writes (`Kube` refuses writes while
`leading()` is false). Webhooks and metrics do not depend on it: every replica serves them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import Gauge

from . import metrics
from .config import OperatorConfig
from .kube import load_api_client
from .lease import LeaseElector, LeaseTiming, holder_identity

log = logging.getLogger(__name__)

LEADER = Gauge("modelcache_leader", "1 while this replica holds the leader Lease and reconciles, else 0.",
               registry=metrics.REGISTRY)


class Leadership:
    """Starts with kopf (`start`, from a startup handler) and hands over with it (`stop`, from cleanup)."""

    def __init__(self, config: OperatorConfig):
        self.config = config
        self.identity = holder_identity()
        self.timing = LeaseTiming(config.lease_duration_seconds, config.renew_deadline_seconds,
                                  config.retry_period_seconds)
        self.elector: LeaseElector | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones
        LEADER.set_function(lambda: 1.0 if self.leading() else 0.0)

    def leading(self) -> bool:
        return self.elector is not None and self.elector.leading()

    def start(self, loop: asyncio.AbstractEventLoop, on_started: Callable[[], Coroutine[Any, Any, None]],
              on_stopped: Callable[[], None]) -> None:
        """on_started runs as a task in kopf's loop, on_stopped in the loop too: both touch loop-only state."""
        def run_started() -> None:
            task = loop.create_task(on_started())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def started() -> None:
            loop.call_soon_threadsafe(run_started)

        def stopped() -> None:
            loop.call_soon_threadsafe(on_stopped)

        client = load_api_client()
        client.user_agent = "modelcache-operator-lease"
        self.elector = LeaseElector(client, self.config.operator_namespace, self.config.lease_name,
                                    self.identity, self.timing, on_started=started, on_stopped=stopped)
        self._thread = threading.Thread(target=self.elector.run, args=(self._stop,), daemon=True,
                                        name="lease-elector")
        self._thread.start()
        log.info("leader election as %s on Lease %s/%s", self.identity, self.config.operator_namespace,
                 self.config.lease_name)

    async def stop(self, in_flight: Callable[[], int]) -> None:
        """Stops leading (writes are refused from here on), waits for the reconciles still running to end,
        then releases the Lease so a follower takes over at its next retry."""
        if self.elector is None or self._thread is None:
            return
        self._stop.set()
        await asyncio.to_thread(self._thread.join, self.timing.request_timeout + 1)
        self.elector.resign()
        deadline = time.monotonic() + self.timing.renew_deadline
        while in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if in_flight():
            log.warning("%d reconciles still running at shutdown; their writes are refused", in_flight())
        await asyncio.to_thread(self.elector.release)
