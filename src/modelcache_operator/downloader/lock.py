"""One writer per volume: `<root>/.modelcache-lock.json`, created with O_EXCL and kept alive by a heartbeat.

flock is not reliable on NFS and object-store FUSE mounts, and two clusters may share a bucket, so the lock is
a plain file holding who owns it and when it last beat. A lock whose heartbeat is older than `stale_after`
belongs to a dead writer and is taken over.

Inside one cluster the operator runs one Job per ModelDownload, with `podReplacementPolicy: Failed`: a
replacement pod is created only once the previous one is terminal; so a lock left by another pod of our own
Job belongs to a pod known to be gone, and is taken over at once. The clock-based rules remain for writers in other
clusters, with their limits: heartbeats are compared across machines (clock skew shifts "stale"), and on
storage without O_EXCL atomicity (ossfs, s3fs) two writers taking over one stale lock can both believe they
hold it until the verify step. Two fences narrow that: a heartbeat that cannot be written for half the stale
period stops the writer, and the manifest is published only while the lock file still holds our token.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import LockHeld

log = logging.getLogger(__name__)

LOCK_NAME = ".modelcache-lock.json"


class VolumeLock:
    def __init__(self, root: Path, identity: dict[str, Any], stale_after: float = 60.0,
                 heartbeat_interval: float = 5.0, wait: float = 0.0) -> None:
        self.path = root / LOCK_NAME
        self.identity = identity
        self.stale_after = stale_after
        self.heartbeat_interval = heartbeat_interval
        self.wait = wait  # how long to wait for a live holder to finish or go stale
        self.token = secrets.token_hex(8)  # tells our lock file from a successor's
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> bytes:
        return json.dumps({**self.identity, "token": self.token, "heartbeat": time.time()}).encode()

    def _read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being rewritten or garbage: judge it by mtime
        return data if isinstance(data, dict) else {}

    def _age(self, holder: dict[str, Any]) -> float:
        beat = holder.get("heartbeat")
        if not isinstance(beat, int | float):
            try:
                beat = self.path.stat().st_mtime
            except FileNotFoundError:
                return float("inf")
        return time.time() - float(beat)

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(self._content())
            f.flush()
            os.fsync(f.fileno())
        return True

    def acquire(self) -> None:
        # A Job's replacement pod often starts while its killed predecessor's heartbeat is still fresh.
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self._acquire_once()
                return
            except LockHeld as e:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.info("Waiting for the volume lock (%.0fs left): %s", left, e)  # says why, every beat
                time.sleep(min(self.heartbeat_interval, max(0.1, left)))

    def _acquire_once(self) -> None:
        for _ in range(3):
            if self._create():
                break
            holder = self._read()
            if holder is None:
                continue  # released between our create and read
            age = self._age(holder)
            if self._left_by_our_job(holder):
                log.warning("Taking over %s from %s, an earlier pod of this Job: a Job starts a new pod only "
                            "after the previous one failed", self.path, holder.get("holder"))
            elif age <= self.stale_after:
                who = {k: holder.get(k) for k in ("holder", "pid", "job") if holder.get(k) is not None}
                raise LockHeld(f"{self.path} is held by {who or 'an unknown writer'}, "
                               f"last heartbeat {age:.0f}s ago (stale after {self.stale_after:.0f}s)")
            else:
                log.warning("Taking over a stale lock %s (heartbeat %.0fs ago, holder %s)", self.path, age,
                            holder.get("holder"))
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        else:
            raise LockHeld(f"could not create {self.path}: other writers keep racing for it")
        # Two writers that took over the same stale lock at once: only the last one's file survives.
        time.sleep(min(0.2, self.heartbeat_interval))
        self._verify()
        self._thread = threading.Thread(target=self._beat, name="lock-heartbeat", daemon=True)
        self._thread.start()

    def _left_by_our_job(self, holder: dict[str, Any]) -> bool:
        job, me = self.identity.get("job"), self.identity.get("holder")
        return bool(job) and holder.get("job") == job and bool(holder.get("holder")) and holder.get("holder") != me

    def check_held(self) -> None:
        """The fencing check before publishing: the lock file must still hold our token."""
        if self.lost.is_set():
            raise LockHeld(f"lost the volume lock {self.path}")
        self._verify()

    def _verify(self) -> None:
        holder = self._read()
        if holder is not None and holder.get("token") != self.token and holder != {}:
            self.lost.set()
            raise LockHeld(f"lost {self.path} to {holder.get('holder')} (pid {holder.get('pid')})")

    def _beat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.heartbeat_interval):
            holder = self._read()
            if holder is None or (holder and holder.get("token") != self.token):
                log.error("Lost the volume lock %s to %s", self.path, holder and holder.get("holder"))
                self.lost.set()
                return
            try:
                # A whole new file (O_TRUNC), never a rewrite in place: object-store mounts replace the
                # object at close, and readers see the old heartbeat until then.
                with self.path.open("wb") as f:
                    f.write(self._content())
                last_ok = time.monotonic()
            except OSError as e:
                silent = time.monotonic() - last_ok
                if silent > self.stale_after / 2:
                    # Others may judge us stale soon; stop before two writers share the folder.
                    log.error("No lock heartbeat written for %.0fs (%s); stopping", silent, e)
                    self.lost.set()
                    return
                log.warning("Could not refresh the lock heartbeat: %s", e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_interval + 1)
        holder = self._read()
        if holder is not None and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> VolumeLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
