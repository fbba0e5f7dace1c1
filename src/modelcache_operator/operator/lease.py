"""Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics.

Why our own and not `kubernetes.leaderelection` or kopf peering (README, "High availability"): the
client's elector has no request timeouts (a renew hung on a dead connection keeps a leader believing it
leads), cannot be stopped or release its Lease, and exits the process on bad settings; kopf's peering
keeps its own KopfPeering objects, not Leases, pauses every watch (indices too) of a lower-priority
replica, and freezes all replicas of equal priority.

The rules, as client-go's: a candidate takes the Lease when it is free (no holder: released) or when its
record has not changed for `lease_duration` by the candidate's own clock (no clocks are compared across
machines). Every write carries the resourceVersion it read, so two candidates never both take it. A leader
counts as leading only until `renew_deadline` after the start of its last successful renew; as
renew_deadline < lease_duration, it stops before anyone else may start, even if its renew call hangs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from .kube import Kube

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's defaults: 15 s, 10 s, 2 s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs 0 < retryPeriod < renewDeadline < leaseDuration, got "
                             f"{self.retry_period}, {self.renew_deadline}, {self.lease_duration}")

    @property
    def request_timeout(self) -> float:
        """One API call may take at most this: a renew that hangs is retried before the deadline."""
        return max(self.renew_deadline / 3, 0.5)


def holder_identity(env: dict[str, str] | None = None) -> str:
    """The pod name (downward API, MODELCACHE_POD_NAME), else the hostname, which is the pod name in a pod."""
    return (env if env is not None else os.environ).get("MODELCACHE_POD_NAME") or socket.gethostname()


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Runs in its own thread (`run`); `leading()` is safe to call from any thread, at any rate."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str, name: str, identity: str,
                 timing: LeaseTiming, *, on_started: Callable[[], None] = lambda: None,
                 on_stopped: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic):
        self.kube = Kube(client)  # not fenced: the Lease is how the fence is decided
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing
        self.on_started, self.on_stopped = on_started, on_stopped
        self.clock = clock
        self._lock = threading.Lock()
        self._valid_until = 0.0  # while clock() is below this, we lead
        self._observed: tuple[Any, ...] | None = None  # the other holder's record, last time we read it
        self._observed_at = 0.0
        self._was_leading = False

    def leading(self) -> bool:
        with self._lock:
            return self.clock() < self._valid_until

    # ----- the loop -----

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set: acquire, renew, notice losing it. Does not release: `release` does."""
        while not stop.is_set():
            started = self.clock()
            try:
                held = self._try_acquire_or_renew(started)
            except (ApiException, OSError, urllib3.exceptions.HTTPError) as error:
                log.warning("Lease %s/%s: %s", self.namespace, self.name, getattr(error, "reason", None) or error)
                held = False
            self._settle(held, started)
            stop.wait(self.timing.retry_period)
        self._settle(False, self.clock(), stopping=True)

    def _settle(self, held: bool, started: float, stopping: bool = False) -> None:
        """Extends the leadership on a renew that succeeded; runs the callbacks on a change."""
        with self._lock:
            if held:
                self._valid_until = started + self.timing.renew_deadline
            elif stopping:
                self._valid_until = 0.0
            leading = self.clock() < self._valid_until
            changed, self._was_leading = leading != self._was_leading, leading
        if changed:
            log.info("%s %s the Lease %s/%s", self.identity, "acquired" if leading else "lost",
                     self.namespace, self.name)
            (self.on_started if leading else self.on_stopped)()

    def _try_acquire_or_renew(self, now: float) -> bool:
        timeout = self.timing.request_timeout
        lease = self.kube.get("Lease", self.name, self.namespace, timeout=timeout)
        if lease is None:
            return self._create(timeout)
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            record = (holder, spec.get("renewTime"), spec.get("acquireTime"), lease["metadata"]["resourceVersion"])
            if record != self._observed:
                self._observed, self._observed_at = record, now
            if now < self._observed_at + float(spec.get("leaseDurationSeconds") or self.timing.lease_duration):
                self._force_lost()
                return False
            log.info("%s takes the Lease %s/%s over from %s, silent for %.0fs", self.identity, self.namespace,
                     self.name, holder, now - self._observed_at)
        stamp = _micro_time()
        if holder != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, renewTime=stamp,
                    leaseDurationSeconds=round(self.timing.lease_duration))
        return self._swap(lease, timeout)

    def _swap(self, lease: dict[str, Any], timeout: float) -> bool:
        """Writes the Lease with the resourceVersion it was read at: a concurrent writer makes this a 409."""
        try:
            self.kube.replace(lease, timeout=timeout)
        except ApiException as error:
            if error.status != 409:
                raise
            return False
        return True

    def _create(self, timeout: float) -> bool:
        stamp = _micro_time()
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": round(self.timing.lease_duration),
                         "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}}
        try:
            self.kube.create(body, timeout=timeout)
        except ApiException as error:
            if error.status != 409:
                raise
            return False  # another candidate created it first
        return True

    def _force_lost(self) -> None:
        """Someone else holds a live Lease: whatever our clock says, we do not lead."""
        with self._lock:
            self._valid_until = 0.0

    # ----- handing over -----

    def resign(self) -> None:
        """Stops leading now, whatever the Lease says; `run` must have returned or it may lead again."""
        self._settle(False, self.clock(), stopping=True)

    def release(self) -> bool:
        """Gives the Lease up if we hold it, as client-go's ReleaseOnCancel: no holder, so a follower takes it
        at its next retry instead of after lease_duration. Call after the work it guards has stopped."""
        self.resign()
        timeout = self.timing.request_timeout
        try:
            lease = self.kube.get("Lease", self.name, self.namespace, timeout=timeout)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return False
            spec.pop("holderIdentity")
            spec.update(leaseDurationSeconds=1, renewTime=_micro_time())
            released = self._swap({**lease, "spec": spec}, timeout)
        except (ApiException, OSError, urllib3.exceptions.HTTPError) as error:
            log.warning("could not release the Lease %s/%s: %s", self.namespace, self.name, error)
            return False
        if released:
            log.info("%s released the Lease %s/%s", self.identity, self.namespace, self.name)
        return released
