"""Byte and file counters of one download, and its progress line."""

from __future__ import annotations

import threading
import time

from .plan import human_bytes


class Progress:
    """Byte and file counters shared by the worker threads."""

    def __init__(self, files_total: int, bytes_total: int, bytes_done: int) -> None:
        self._lock = threading.Lock()
        self.files_total, self.bytes_total, self.bytes_done = files_total, bytes_total, bytes_done
        self.files_done = 0
        self.rate = 0.0
        self._mark = (time.monotonic(), bytes_done)

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def tick(self) -> float:
        """Update the transfer rate over the time since the last tick."""
        with self._lock:
            now = time.monotonic()
            t0, b0 = self._mark
            if now - t0 > 0.05:
                self.rate = max(0.0, (self.bytes_done - b0) / (now - t0))
                self._mark = (now, self.bytes_done)
            return self.rate

    def line(self) -> str:
        done, total, rate = self.bytes_done, self.bytes_total, self.rate
        pct = 100.0 * done / total if total else 100.0
        eta = f"{(total - done) / rate:.0f}s" if rate > 0 else "?"
        return (f"{pct:5.1f}% {human_bytes(done)}/{human_bytes(total)} at {human_bytes(rate)}/s, ETA {eta}, "
                f"files {self.files_done}/{self.files_total}")
