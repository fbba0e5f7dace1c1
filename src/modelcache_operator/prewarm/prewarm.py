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

import os
import signal
import sys
import threading
import time

# Not `typing`: importing it (and the `re` it pulls in) is ~10 ms of every pod start. mypy treats
# any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

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
    from modelcache_operator.prewarm.prewarm_read import (
        READ_BYTES,
        Chunk,
        Stats,
        cold_bytes,
        plan_chunks,
        warm_chunk,
    )
    from modelcache_operator.prewarm.prewarm_report import PREFIX, Outcome, Reporter, human, summary
    from modelcache_operator.prewarm.prewarm_residency import Residency, load_residency
else:  # run as a script (`python3 -I -S prewarm.py`): -I leaves our own directory off sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from prewarm_budget import cgroup_memory, meminfo, memory_budget, select_within
    from prewarm_files import MANIFEST, Collected, FileEntry, collect_files, data_bytes, manifest_paths
    from prewarm_read import READ_BYTES, Chunk, Stats, cold_bytes, plan_chunks, warm_chunk
    from prewarm_report import PREFIX, Outcome, Reporter, human, summary
    from prewarm_residency import Residency, load_residency

# Heavier modules (argparse, ctypes, shutil) are imported where they are used: the warm path's
# fixed cost is paid on every pod start, even when everything is already cached.
# ruff: noqa: PLC0415

PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 600.0
# Smallest range worth its own handle and stream; below it, splitting costs more than it gains.
DEFAULT_CHUNK = 32 << 20
# FUSE files read at once, whatever --concurrency says: one s3fs process served the same ~200 MiB/s
# to 1, 2, 4 or 8 readers, and more readers only burned its CPU (16 in flight: 0.6-0.7x the seed
# hook's 4; BENCHMARKS.md, "Prewarm").
FUSE_FILES_IN_FLIGHT = 4
SH_FALLBACK = "prewarm.sh"
# The modules install() copies next to prewarm.py.
SIBLINGS = (
    "prewarm_budget.py", "prewarm_files.py", "prewarm_read.py", "prewarm_report.py", "prewarm_residency.py",
)


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
