"""The one summary line prewarm prints, and where it goes: stdout (the hook's exec output), a log
file, and the container's own log (PID 1's stdout), so `kubectl logs` shows it without exec.

    modelcache-prewarm: files=3 bytes=72.0MiB warmed=72.0MiB in 0.4s (180.0MiB/s) resident=100.0%
      budget=1.2GiB(cgroup) over_budget=0B skipped=0 errors=0 timeout=false

(one line). resident is n/a(<reason>) when there is nothing honest to say: folder-missing,
no-files, unreadable, unmeasurable. Stdlib-only and self-contained like prewarm.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

PREFIX = "modelcache-prewarm:"


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Outcome:
    """What a run did, for the summary line."""

    def __init__(self) -> None:
        self.files = 0
        self.total = 0  # data bytes of all files found (holes excluded)
        self.warmed = 0
        self.elapsed = 0.0
        self.resident: float | None = None
        self.na_reason = ""  # set when resident is not a percentage
        self.budget: int | None = None
        self.budget_source = "none"
        self.over_budget = 0
        self.skipped = 0
        self.errors = 0
        self.timed_out = False


def resident_text(o: Outcome) -> str:
    if o.na_reason:
        return f"n/a({o.na_reason})"
    if o.resident is None:
        return "n/a(unmeasurable)"
    return f"{o.resident * 100:.1f}%"


def summary(o: Outcome) -> str:
    rate = o.warmed / o.elapsed if o.elapsed > 0 else 0.0
    budget = "none" if o.budget is None else f"{human(o.budget)}({o.budget_source})"
    return (
        f"{PREFIX} files={o.files} bytes={human(o.total)} warmed={human(o.warmed)} "
        f"in {o.elapsed:.1f}s ({human(rate)}/s) resident={resident_text(o)} budget={budget} "
        f"over_budget={human(o.over_budget)} skipped={o.skipped} errors={o.errors} "
        f"timeout={str(o.timed_out).lower()}"
    )


def _write_nonblocking(path: str, data: bytes) -> None:
    """One write to path without ever blocking: O_NONBLOCK on a full pipe fails rather than waits,
    and a line below PIPE_BUF reaches a pipe whole."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class Reporter:
    """Emits exactly one report, whether from the main thread or the watchdog."""

    def __init__(self, log_file: str | None, container_log: str | None = None) -> None:
        self.log_file = log_file
        self.container_log = container_log
        self.lock = threading.Lock()
        self.done = False

    def emit(self, lines: list[str]) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
            text = "".join(line + "\n" for line in lines)
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            if self.log_file:
                try:
                    with open(self.log_file, "a", encoding="utf-8") as f:
                        f.write(text)
                except OSError:
                    pass
            if self.container_log:
                # Only the summary: the container's log belongs to the server.
                with contextlib.suppress(OSError, IndexError):
                    _write_nonblocking(self.container_log, (lines[-1] + "\n").encode("utf-8", "replace"))
