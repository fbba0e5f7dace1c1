"""How one warm run is carried out and bounded: worker threads read the plan's ranges (prewarm_read)
until done or the deadline, in a forked child process group that the parent kills as a whole and
that dies with it, so a hook killed or timed out leaves no reader behind. Stdlib-only like
prewarm.py.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

TYPE_CHECKING = False  # not `typing`: see prewarm.py
if TYPE_CHECKING:
    from collections.abc import Iterator

if TYPE_CHECKING or __package__:
    from modelcache_operator.prewarm.prewarm_files import data_bytes
    from modelcache_operator.prewarm.prewarm_plan import Options, Plan, plan
    from modelcache_operator.prewarm.prewarm_read import READ_BYTES, Chunk, Stats, plan_chunks, warm_chunk
    from modelcache_operator.prewarm.prewarm_report import PREFIX, Outcome, Reporter, summary
    from modelcache_operator.prewarm.prewarm_residency import Residency, load_residency
else:  # imported by prewarm.py run as a script, which put this directory on sys.path
    from prewarm_files import data_bytes
    from prewarm_plan import Options, Plan, plan
    from prewarm_read import READ_BYTES, Chunk, Stats, plan_chunks, warm_chunk
    from prewarm_report import PREFIX, Outcome, Reporter, summary
    from prewarm_residency import Residency, load_residency

# ctypes is imported where it is used: the warm path's fixed cost is paid on every pod start.
# ruff: noqa: PLC0415

PAGE = os.sysconf("SC_PAGE_SIZE")
# FUSE files read at once, whatever --concurrency says: one s3fs process serves about the same
# ~200 MiB/s to any number of readers, and more only burn its CPU and ours. 2 was the fastest of
# 1, 2 and 4 in interleaved runs, quiet and loaded (1 lost most under load: one stream stalls
# whenever its reader waits for a CPU); BENCHMARKS.md, "Prewarm".
FUSE_FILES_IN_FLIGHT = 2


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
