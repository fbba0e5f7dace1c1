#!/usr/bin/env python3
"""Warm the node's page cache with a model's files before a server loads them.

Stdlib-only (Python 3.8+): an init container copies this file and its prewarm_*.py siblings into
an emptyDir and the serving image's own ``python3`` runs it from a postStart hook.

    prewarm.py warm --dir DIR [--dir DIR2] [--concurrency N] [--timeout S] [--chunk-bytes B]
                    [--log-file P] [--container-log P] [--memory-headroom B] [--memory-reserve B]
    prewarm.py wait --dir DIR [--timeout S] [--interval S]
    prewarm.py install DEST_DIR

``warm`` always exits 0 within ``--timeout``: a hook that fails or hangs would block the pod. The
one exception is exit 3 on a Python older than 3.8, so the hook can fall back to prewarm.sh.

What ``warm`` reads (prewarm_files): the manifest's regular files (else a walk), weights first,
only their data extents. How much (prewarm_budget): no more than the container can keep; what
does not fit is left out and reported. How: each file is split into a few large contiguous ranges
(about ``total / concurrency`` bytes, never smaller than ``--chunk-bytes``), one open file handle
per range, pulled front to back into the page cache with sendfile(2) to /dev/null (no copy to user
space). On FUSE mounts (s3fs, ossfs, ...) each file is read by one handle from its start with
128 KiB reads, at most ``FUSE_FILES_IN_FLIGHT`` files at once: these daemons serialise the reads of
one file and prefetch only ahead of a sequential reader. Pages already resident are skipped
(prewarm_residency), so a re-run costs one cachestat/mincore call per range.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
import threading
import time
from collections import namedtuple

# Not `typing`: importing it (and the `re` it pulls in) is ~10 ms of every pod start. mypy treats
# any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator
    from typing import NamedTuple

if TYPE_CHECKING or __package__:
    from modelcache_operator.prewarm.prewarm_budget import cgroup_memory, meminfo, memory_budget, select_within
    from modelcache_operator.prewarm.prewarm_files import (
        MANIFEST,
        Collected,
        FileEntry,
        collect_files,
        data_bytes,
        manifest_paths,
    )
    from modelcache_operator.prewarm.prewarm_report import PREFIX, Outcome, Reporter, human, summary
    from modelcache_operator.prewarm.prewarm_residency import Residency, cold_runs, load_residency
else:  # run as a script (`python3 -I -S prewarm.py`): -I leaves our own directory off sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from prewarm_budget import cgroup_memory, meminfo, memory_budget, select_within
    from prewarm_files import MANIFEST, Collected, FileEntry, collect_files, data_bytes, manifest_paths
    from prewarm_report import PREFIX, Outcome, Reporter, human, summary
    from prewarm_residency import Residency, cold_runs, load_residency

# Heavier modules (argparse, ctypes, shutil) are imported where they are used: the warm path's
# fixed cost is paid on every pod start, even when everything is already cached.
# ruff: noqa: PLC0415

PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 600.0
# Smallest range worth its own handle and stream; below it, splitting costs more than it gains.
DEFAULT_CHUNK = 32 << 20
# On FUSE, a range left partly cold (e.g. pages taken by proactive reclaim since the last run) is
# only re-read if at least this share of it is cold: s3fs/ossfs answer even a 4 KiB read by
# downloading tens of MiB, so chasing scattered holes costs more than the holes are worth.
FUSE_REREAD_SHARE = 0.02
READ_BYTES = 8 << 20
SPLICE_BYTES = 8 << 20  # per sendfile call: a stop request is seen within one
# On FUSE, reads the size of the kernel's own FUSE requests: one big read fans out into many
# concurrent FUSE reads of one file, which s3fs/ossfs serialise and prefetch for one by one.
FUSE_READ_BYTES = 128 << 10
# FUSE files read at once, whatever --concurrency says: one s3fs process served the same ~200 MiB/s
# to 1, 2, 4 or 8 readers, and more readers only burned its CPU (16 in flight: 0.6-0.7x the seed
# hook's 4; BENCHMARKS.md, "Prewarm").
FUSE_FILES_IN_FLIGHT = 4
SH_FALLBACK = "prewarm.sh"
# The modules install() copies next to prewarm.py.
SIBLINGS = ("prewarm_budget.py", "prewarm_files.py", "prewarm_report.py", "prewarm_residency.py")


if TYPE_CHECKING:

    class Chunk(NamedTuple):
        file: int  # index into the file list
        offset: int
        length: int

else:
    Chunk = namedtuple("Chunk", "file offset length")


def plan_chunks(files: list[FileEntry], concurrency: int, min_range: int) -> list[Chunk]:
    """Splits each file's data extents into a few large page-aligned ranges, in file order (a
    timeout leaves the first files complete). Ranges aim at an even share of all bytes per worker,
    so every worker streams until the end; an extent gets at most `concurrency` ranges and none
    shorter than min_range, since each range costs an open and a new stream. A FUSE file is one
    range."""
    concurrency = max(1, concurrency)
    share = -(-sum(data_bytes(f) for f in files) // concurrency)
    chunks: list[Chunk] = []
    for i, entry in enumerate(files):
        extents = ((0, entry.size),) if entry.extents is None else entry.extents
        for start, size in extents:
            if size <= 0:
                continue
            parts = 1 if entry.fuse else max(
                1, min(concurrency, size // max(PAGE, min_range), round(size / max(1, share))))
            step = -(-size // parts)
            step += -step % PAGE
            for off in range(0, size, step):
                chunks.append(Chunk(i, start + off, min(step, size - off)))
    return chunks


# --------------------------------------------------------------------------------------------
# Warming


class Stats:
    def __init__(self, files: int, total: int, pages: int = 0, budget: int | None = None) -> None:
        self.lock = threading.Lock()
        self.files = files
        self.total = total
        self.pages = pages  # pages of all files; ranges never checked count as not resident
        self.warmed = 0
        self.skipped = 0
        self.errors = 0
        self.budget_left = budget  # bytes still allowed to be read (None: unbounded)
        self.over_budget = 0  # bytes left unread because the budget ran out mid-run
        self.bad: set[int] = set()  # files already counted as skipped or errored
        # Pages found resident as each range was left, and pages checked. resident_pages is
        # None once a range could not be checked (no mincore, or a mount that refuses mmap).
        self.resident_pages: int | None = 0
        self.checked_pages = 0

    def allow(self, wanted: int) -> int:
        """Takes up to wanted bytes from the budget; returns how many may be read."""
        with self.lock:
            if self.budget_left is None:
                return wanted
            got = min(wanted, self.budget_left)
            self.budget_left -= got
            self.over_budget += wanted - got
            return got

    def add(self, n: int) -> None:
        with self.lock:
            self.warmed += n

    def fail(self, file: int, vanished: bool) -> None:
        with self.lock:
            if file not in self.bad:
                self.bad.add(file)
                if vanished:
                    self.skipped += 1
                else:
                    self.errors += 1

    def checked(self, resident: int | None, length: int) -> None:
        """Records a range of length bytes left with `resident` pages in the cache (None:
        unknown)."""
        with self.lock:
            self.checked_pages += (length + PAGE - 1) // PAGE
            if resident is None or self.resident_pages is None:
                self.resident_pages = None
            else:
                self.resident_pages += resident

    def resident(self) -> float | None:
        """Fraction of all pages resident right after their range was warmed, or None if
        residency could not be checked."""
        with self.lock:
            if self.resident_pages is None:
                return None
            total = max(self.pages, self.checked_pages)
            return 1.0 if total == 0 else self.resident_pages / total


def _read_range(fd: int, offset: int, length: int, buf: memoryview, stop: threading.Event) -> int:
    done = 0
    while done < length and not stop.is_set():
        want = min(len(buf), length - done)
        n = os.preadv(fd, [buf[:want]], offset + done)
        if n <= 0:  # truncated underneath us
            break
        done += n
    return done


def _splice_range(fd: int, offset: int, length: int, sink: int, stop: threading.Event) -> int | None:
    """Pulls a range into the page cache with sendfile(2) to /dev/null: the kernel reads the pages
    but copies nothing to user space (on local disk: the same speed as 4 reading threads at ~1/20
    of their CPU). None if this file system cannot splice; the caller then reads."""
    done = 0
    while done < length and not stop.is_set():
        try:
            n = os.sendfile(sink, fd, offset + done, min(SPLICE_BYTES, length - done))
        except OSError as e:
            if done == 0 and e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                return None
            raise
        if n <= 0:  # truncated underneath us
            break
        done += n
    return done


def warm_chunk(
    files: list[FileEntry], chunk: Chunk, res: Residency | None, stats: Stats,
    *, buf: Callable[[], memoryview], stop: threading.Event, sink: int | None = None,
) -> None:
    """Reads the cold pages of one range: spliced into `sink` (/dev/null) on local file systems,
    read into buf() on FUSE (128 KiB reads suit s3fs/ossfs best) or where splicing is refused.
    buf() allocates the worker's buffer on first use: zeroing 16 idle 8 MiB buffers used to cost a
    warm re-run more than its mincore checks."""
    entry = files[chunk.file]
    try:
        # O_NONBLOCK: a FIFO swapped in after planning must not block the open.
        fd = os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        stats.fail(chunk.file, vanished=True)
        return
    except OSError:
        stats.fail(chunk.file, vanished=False)
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            stats.fail(chunk.file, vanished=True)
            return
        npages = (chunk.length + PAGE - 1) // PAGE
        # A range already resident in full (every range of a warm re-run) costs one cachestat.
        before = res.count(fd, chunk.offset, chunk.length) if res else None
        vec = None
        if before is not None and before >= npages:
            runs = []
        else:
            vec = res.pages(fd, chunk.offset, chunk.length) if res else None
            runs = [(chunk.offset, chunk.length)] if vec is None else cold_runs(vec, chunk.offset, chunk.length)
            before = None if vec is None else vec.count(1)
            if entry.fuse and vec is not None and vec.count(0) < FUSE_REREAD_SHARE * len(vec):
                runs = []
        if runs:
            # Doubles the kernel's readahead window on this handle: the whole range is wanted.
            os.posix_fadvise(fd, chunk.offset, chunk.length, os.POSIX_FADV_SEQUENTIAL)
            os.set_blocking(fd, True)  # a regular file: O_NONBLOCK only guarded the open
        for off, wanted in runs:
            length = stats.allow(wanted)  # never past the budget: the excess would evict our own pages
            if stop.is_set() or length <= 0:
                return
            spliced = None if entry.fuse or sink is None else _splice_range(fd, off, length, sink, stop)
            if spliced is None:
                spliced = _read_range(fd, off, length, buf()[:FUSE_READ_BYTES] if entry.fuse else buf(), stop)
            stats.add(spliced)
        if res is not None:
            # Checked right after reading: on nodes with proactive reclaim, a check at the very
            # end would already miss pages that were resident when the server could use them.
            stats.checked(resident_count(res, fd, chunk) if runs else before, chunk.length)
    except OSError:
        stats.fail(chunk.file, vanished=False)
    finally:
        os.close(fd)


def resident_count(res: Residency, fd: int, chunk: Chunk) -> int | None:
    """Resident pages of a range just read: cachestat, else mincore."""
    n = res.count(fd, chunk.offset, chunk.length)
    if n is None:
        vec = res.pages(fd, chunk.offset, chunk.length)
        n = None if vec is None else vec.count(1)
    return n


def cold_bytes(entry: FileEntry, res: Residency | None) -> int:
    """Bytes of entry's data not yet in the page cache: what reading it would add to the memory
    charged to this container. All of it where residency cannot be measured."""
    total = data_bytes(entry)
    if res is None or entry.fuse:
        return total
    extents = ((0, entry.size),) if entry.extents is None else entry.extents
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return total
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return total
        resident = 0
        for start, size in extents:
            n = res.count(fd, start, size)
            if n is None:
                vec = res.pages(fd, start, size)
                n = 0 if vec is None else vec.count(1)
            resident += n * PAGE
        return max(0, total - resident)
    finally:
        os.close(fd)


class Options:
    """warm's settings beyond the folders."""

    def __init__(
        self, *, concurrency: int = DEFAULT_CONCURRENCY, timeout: float = DEFAULT_TIMEOUT,
        chunk_bytes: int = DEFAULT_CHUNK, log_file: str | None = None, container_log: str | None = None,
        headroom: int | None = None, reserve: int | None = None,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.timeout = max(0.1, timeout)
        self.chunk_bytes = chunk_bytes
        self.log_file = log_file
        self.container_log = container_log
        self.headroom = headroom
        self.reserve = reserve


class Plan:
    """The files to read, after the budget, and the outcome so far."""

    def __init__(self, collected: Collected, files: list[FileEntry], outcome: Outcome, notes: list[str]) -> None:
        self.collected = collected
        self.files = files
        self.outcome = outcome
        self.notes = notes


def plan(roots: list[str], opts: Options, res: Residency | None) -> Plan:
    """Collects the files and keeps, in priority order, those whose cold bytes fit the budget."""
    collected = collect_files(roots)
    notes = list(collected.notes)
    o = Outcome()
    o.files = len(collected.files)
    o.total = sum(data_bytes(f) for f in collected.files)
    o.skipped = collected.skipped
    holes = sum(f.size - data_bytes(f) for f in collected.files)
    if holes:
        notes.append(f"holes skipped: {human(holes)} of sparse files is not data")
    if collected.reasons:
        notes.append("not warmed: " + ", ".join(f"{n} {why}" for why, n in sorted(collected.reasons.items())))
    if collected.roots_missing:
        notes.append(f"{collected.roots_missing} of {len(roots)} model folders missing")
    if collected.roots_missing == len(roots):
        o.na_reason = "folder-missing"
    elif not collected.files:
        o.na_reason = "unreadable" if collected.reasons.get("unreadable") else "no-files"
    budget = memory_budget(opts.headroom, opts.reserve, cgroup_memory(), meminfo())
    o.budget, o.budget_source = budget.bytes, budget.source
    files = collected.files
    if budget.bytes is not None and o.total > budget.bytes:
        taken, o.over_budget = select_within([cold_bytes(f, res) for f in files], budget.bytes)
        files = [f for f, keep in zip(files, taken, strict=True) if keep]
        if o.over_budget:
            notes.append(
                f"over budget: {o.files - len(files)} files ({human(o.over_budget)} not yet cached) left cold; "
                f"budget {human(budget.bytes)} from {budget.source} ({budget.detail})")
    return Plan(collected, files, o, notes)


def _run_workers(p: Plan, opts: Options, res: Residency | None, stats: Stats, *, stop: threading.Event,
                 deadline: float) -> bool:
    """Reads p.files' cold ranges with opts.concurrency workers until done or the deadline;
    returns whether the deadline was hit."""
    files = p.files
    chunks = plan_chunks(files, opts.concurrency, opts.chunk_bytes)
    local = [c for c in chunks if not files[c.file].fuse]
    fuse = [c for c in chunks if files[c.file].fuse]
    pools = [(iter(local), min(opts.concurrency, len(local))),
             (iter(fuse), min(opts.concurrency, FUSE_FILES_IN_FLIGHT, len(fuse)))]
    take = threading.Lock()
    try:
        sink: int | None = os.open(os.devnull, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        sink = None  # no /dev/null in this image: read instead of splicing

    def worker(pending: Iterator[Chunk]) -> None:
        bufs: list[memoryview] = []

        def buf() -> memoryview:
            if not bufs:
                bufs.append(memoryview(bytearray(READ_BYTES)))
            return bufs[0]

        while not stop.is_set():
            with take:
                chunk = next(pending, None)
            if chunk is None:
                return
            try:
                warm_chunk(files, chunk, res, stats, buf=buf, stop=stop, sink=sink)
            except Exception:  # never let one chunk kill a worker
                stats.fail(chunk.file, vanished=False)

    threads = [
        threading.Thread(target=worker, args=(pending,), name=f"warm-{i}", daemon=True)
        for pending, workers in pools for i in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    return any(t.is_alive() for t in threads)


def _finish(o: Outcome, stats: Stats | None, start: float, plan_files: int) -> Outcome:
    o.elapsed = time.monotonic() - start
    if stats is not None:
        o.warmed = stats.warmed
        o.skipped += stats.skipped
        o.errors += stats.errors
        o.over_budget += stats.over_budget
        o.resident = stats.resident()
        if not o.na_reason and plan_files and len(stats.bad) == plan_files and stats.warmed == 0:
            o.na_reason = "unreadable"
    return o


def warm_in_process(roots: list[str], opts: Options) -> int:
    """Warms and reports within opts.timeout. Its process may outlive the report: a thread blocked
    in a hung FUSE read cannot be joined until the daemon answers, so warm() runs this in a child."""
    start = time.monotonic()
    hard_deadline = start + opts.timeout
    # The report gets a slice of the budget, so the whole run fits.
    warm_deadline = hard_deadline - min(2.0, opts.timeout * 0.1)
    reporter = Reporter(opts.log_file, opts.container_log)
    notes: list[str] = []
    outcome = Outcome()
    stats: Stats | None = None
    stop = threading.Event()
    finished = threading.Event()

    def watchdog() -> None:
        # A read stuck in a hung FUSE request cannot be interrupted; leave without it.
        if finished.wait(max(0.0, hard_deadline - time.monotonic())):
            return
        stop.set()
        o = _finish(outcome, stats, start, 0)
        o.timed_out = True
        reporter.emit([f"{PREFIX} {n}" for n in notes] + [summary(o)])
        os._exit(0)

    threading.Thread(target=watchdog, name="watchdog", daemon=True).start()
    res = load_residency()
    plan_files = 0
    try:
        p = plan(roots, opts, res)
        outcome, plan_files = p.outcome, len(p.files)
        notes.extend(p.notes)
        if res is None:
            notes.append("mincore unavailable; reading everything")
        stats = Stats(len(p.files), outcome.total,
                      sum(-(-data_bytes(f) // PAGE) for f in p.collected.files),
                      budget=None if outcome.budget is None else outcome.budget)
        outcome.timed_out = _run_workers(p, opts, res, stats, stop=stop, deadline=warm_deadline)
    except Exception as e:  # the hook must never fail the container
        notes.append(f"error: {type(e).__name__}: {e}")
        outcome.errors += 1
    reporter.emit([f"{PREFIX} {n}" for n in notes] + [summary(_finish(outcome, stats, start, plan_files))])
    finished.set()
    return 0


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL): if the hook is killed (say by its outer `timeout -s KILL`),
    the kernel kills this reader too, so none is left reading for a hook that is gone."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _kill_group(pgid: int) -> None:
    """SIGKILL the reader's process group and reap it. FUSE requests wait killably, so even a
    reader stuck in a hung mount goes; it is reaped if it goes within a second, else by init."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        return
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pgid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)


def warm(roots: list[str], opts: Options) -> int:
    """Runs warm_in_process in a child process group and relays its report, returning by the
    timeout even if the child is stuck in a FUSE read; the child's whole group is killed before we
    return, and dies with us if we are killed. The child is a fork of this process, not a new
    interpreter: a warm re-run is mostly fixed cost, and a second Python start-up (plus importing
    subprocess) was a large share of it."""
    child_timeout = max(0.1, opts.timeout - min(0.5, opts.timeout * 0.1))  # leaves its report time to reach us
    reporter = Reporter(opts.log_file, opts.container_log)
    lines: list[str] = []
    reported = threading.Event()
    start = time.monotonic()
    try:
        sys.stdout.flush()  # nothing buffered may be written twice
        rfd, wfd = os.pipe()
        parent = os.getpid()
        pid = os.fork()  # before any thread of ours exists
    except OSError as e:
        reporter.emit([f"{PREFIX} error: cannot start worker: {e}; nothing warmed"])
        return 0
    if pid == 0:  # the child: warm, report on the pipe, never return into the caller
        try:
            os.close(rfd)
            os.setsid()  # its own process group, which the parent kills as a whole
            _die_with_parent()
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(wfd, 1)
            os.dup2(null, 2)
            child_opts = Options(concurrency=opts.concurrency, timeout=child_timeout, chunk_bytes=opts.chunk_bytes,
                                 headroom=opts.headroom, reserve=opts.reserve)
            warm_in_process(roots, child_opts)
            sys.stdout.flush()
        finally:
            os._exit(0)
    os.close(wfd)

    def pump() -> None:
        with os.fdopen(rfd, "rb") as out:
            for raw in out:
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                if " timeout=" in lines[-1]:
                    break
        reported.set()

    threading.Thread(target=pump, daemon=True).start()
    if not reported.wait(opts.timeout):
        lines.append(f"{PREFIX} worker silent (stuck before it could report)")
        o = Outcome()
        o.elapsed, o.timed_out, o.na_reason = time.monotonic() - start, True, "no-report"
        lines.append(summary(o))
    _kill_group(pid)
    reporter.emit(list(lines))
    return 0

# --------------------------------------------------------------------------------------------
# wait / install


def manifest_ready(root: str) -> bool:
    try:
        with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
            manifest_paths(root, f.read())
        return True
    except (OSError, ValueError):  # absent, or still being written
        return False


def wait(root: str, timeout: float, interval: float) -> int:
    deadline = time.monotonic() + timeout if timeout > 0 else None
    finished = threading.Event()

    def watchdog() -> None:
        assert deadline is not None
        # A manifest check stuck on a hung mount must not outlive the timeout.
        if not finished.wait(max(0.0, deadline - time.monotonic()) + interval + 5):
            print(f"{PREFIX} wait: manifest check hung; giving up", flush=True)
            os._exit(1)

    if deadline is not None:
        threading.Thread(target=watchdog, daemon=True).start()
    try:
        while True:
            if manifest_ready(root):
                print(f"{PREFIX} wait: {os.path.join(root, MANIFEST)} present", flush=True)
                return 0
            if deadline is not None and time.monotonic() >= deadline:
                print(f"{PREFIX} wait: no manifest under {root} after {timeout:.0f}s", flush=True)
                return 1
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
    finally:
        finished.set()


def install(dest: str) -> int:
    import shutil

    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(dest, exist_ok=True)
    for name in (os.path.basename(__file__), SH_FALLBACK, *SIBLINGS):
        target = os.path.join(dest, "prewarm.py" if name == os.path.basename(__file__) else name)
        tmp = f"{target}.tmp{os.getpid()}"
        shutil.copyfile(os.path.join(here, name), tmp)
        os.chmod(tmp, 0o755)  # noqa: S103 - run by other users' images
        os.replace(tmp, target)
        print(f"{PREFIX} installed {target}", flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# CLI


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, ""))
    except ValueError:
        return default


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    import argparse

    p = argparse.ArgumentParser(prog="modelcache-prewarm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    model_dir = os.environ.get("MODEL_DIR")
    w = sub.add_parser("warm", help="read a model's files into the page cache (always exits 0)")
    w.add_argument("--dir", dest="dirs", action="append", help="model directory; repeatable ($MODEL_DIR)")
    w.add_argument("--concurrency", type=int,
                   default=int(_env_float("PREWARM_CONCURRENCY", DEFAULT_CONCURRENCY)))
    w.add_argument("--timeout", type=float, default=_env_float("PREWARM_TIMEOUT_SECONDS", DEFAULT_TIMEOUT))
    w.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK)
    w.add_argument("--log-file")
    w.add_argument("--container-log", help="also write the summary here, e.g. /proc/1/fd/1 (the container's log)")
    w.add_argument("--memory-headroom", type=int, default=_env_int("PREWARM_MEMORY_HEADROOM_BYTES"),
                   help="bytes of the memory limit left to the server (default: 10%%, >= 64 MiB)")
    w.add_argument("--memory-reserve", type=int, default=_env_int("PREWARM_MEMORY_RESERVE_BYTES"),
                   help="bytes of MemAvailable left to the node (default: 5%% of MemTotal, >= 256 MiB)")
    w.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    a = sub.add_parser("wait", help="wait for DIR/.modelcache/manifest.json (exit 1 on timeout)")
    a.add_argument("--dir", default=model_dir, required=model_dir is None)
    a.add_argument("--timeout", type=float, default=0.0, help="seconds; 0 waits forever")
    a.add_argument("--interval", type=float, default=2.0)
    i = sub.add_parser("install", help="copy prewarm.py, its modules and prewarm.sh into DEST_DIR")
    i.add_argument("dest")
    args = p.parse_args(argv)
    if args.cmd == "warm" and not args.dirs:
        args.dirs = [model_dir] if model_dir else []
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["warm"]:
        # Even a bad command line must not fail the hook.
        try:
            args = parse_args(argv)
        except SystemExit:
            print(f"{PREFIX} bad arguments; nothing warmed", flush=True)
            return 0
        if not args.dirs:
            print(f"{PREFIX} no --dir and no $MODEL_DIR; nothing warmed", flush=True)
            return 0
        opts = Options(concurrency=args.concurrency, timeout=args.timeout, chunk_bytes=args.chunk_bytes,
                       log_file=args.log_file, container_log=args.container_log,
                       headroom=args.memory_headroom, reserve=args.memory_reserve)
        return (warm_in_process if args.in_process else warm)(args.dirs, opts)
    args = parse_args(argv)
    if args.cmd == "wait":
        return wait(args.dir, args.timeout, max(0.05, args.interval))
    return install(args.dest)


if __name__ == "__main__":
    if sys.version_info < (3, 8):  # noqa: UP036 - the serving image's python3, not ours
        sys.exit(3)  # the hook runs prewarm.sh instead
    # os._exit skips joining worker threads that may sit in a hung read.
    code = main()
    sys.stdout.flush()
    os._exit(code)
