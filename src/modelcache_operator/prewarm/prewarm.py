#!/usr/bin/env python3
"""Warm the node's page cache with a model's files before a server loads them.

Self-contained and stdlib-only (Python 3.8+): an init container copies this file into an emptyDir
and the serving image's own ``python3`` runs it from a postStart hook.

    prewarm.py warm --dir DIR [--dir DIR2] [--concurrency N] [--timeout S] [--chunk-bytes B] [--log-file P]
    prewarm.py wait --dir DIR [--timeout S] [--interval S]
    prewarm.py install DEST_DIR

``warm`` always exits 0 within ``--timeout``: a hook that fails or hangs would block the pod.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import queue
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import NamedTuple

PREFIX = "modelcache-prewarm:"
MANIFEST = os.path.join(".modelcache", "manifest.json")
PAGE = mmap.PAGESIZE
DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 600.0
DEFAULT_CHUNK = 64 << 20
READ_BYTES = 1 << 20
# Resident holes smaller than this between two cold runs are re-read rather than split into
# separate small reads: one larger sequential read is cheaper than two seeks.
MERGE_GAP = 1 << 20
SH_FALLBACK = "prewarm.sh"


class FileEntry(NamedTuple):
    path: str
    size: int


class Chunk(NamedTuple):
    file: int  # index into the file list
    offset: int
    length: int


# --------------------------------------------------------------------------------------------
# Planning: which files, split into which ranges


def _inside(root_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def safe_join(root: str, rel: str) -> str | None:
    """Joins a manifest path under root, or None if it is absolute, climbs out, or resolves
    (through symlinks) outside root."""
    if not rel or "\0" in rel or os.path.isabs(rel):
        return None
    parts = rel.replace("\\", "/").split("/")
    if ".." in parts:
        return None
    path = os.path.join(root, *[p for p in parts if p not in ("", ".")])
    return path if _inside(os.path.realpath(root), path) else None


def manifest_paths(root: str, text: str) -> tuple[list[str], int]:
    """Parses manifest JSON; returns (safe absolute paths, count of rejected entries).
    Raises ValueError if the document is not a manifest."""
    doc = json.loads(text)
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        raise ValueError("manifest has no 'files' list")
    paths: list[str] = []
    rejected = 0
    for item in files:
        rel = item.get("path") if isinstance(item, dict) else None
        path = safe_join(root, rel) if isinstance(rel, str) else None
        if path is None:
            rejected += 1
        else:
            paths.append(path)
    return paths, rejected


def walk_paths(root: str) -> list[str]:
    """Every file under root except the .modelcache metadata; symlinked directories are not
    followed (they may loop or leave root), symlinked files are kept and checked later."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != ".modelcache"]
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out


def collect_files(roots: Iterable[str], log: list[str]) -> tuple[list[FileEntry], int]:
    """Resolves each root's file list (manifest first, else a walk) into regular files inside
    their root, deduplicated by inode. Returns (files, skipped)."""
    files: list[FileEntry] = []
    seen: set[tuple[int, int]] = set()
    skipped = 0
    for root in roots:
        root_real = os.path.realpath(root)
        try:
            with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
                paths, rejected = manifest_paths(root, f.read())
            skipped += rejected
        except FileNotFoundError:
            paths = walk_paths(root)
        except (OSError, ValueError) as e:
            log.append(f"manifest unusable ({type(e).__name__}: {e}); walking {root}")
            paths = walk_paths(root)
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                skipped += 1
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:  # hard link or a second symlink to the same blob
                continue
            if not stat.S_ISREG(st.st_mode) or not _inside(root_real, path):
                skipped += 1
                continue
            seen.add(key)
            files.append(FileEntry(path, st.st_size))
    return files, skipped


def plan_chunks(files: list[FileEntry], chunk_bytes: int) -> list[Chunk]:
    """Splits files into page-aligned ranges in file order, so several threads read one large
    file at once and a timeout leaves the first files complete."""
    step = max(PAGE, chunk_bytes - chunk_bytes % PAGE)
    chunks: list[Chunk] = []
    for i, entry in enumerate(files):
        for off in range(0, entry.size, step):
            chunks.append(Chunk(i, off, min(step, entry.size - off)))
    return chunks


# --------------------------------------------------------------------------------------------
# Residency: mincore(2) through ctypes


class Residency:
    """Page-cache residency of file ranges via mmap + mincore, without touching the pages."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._mmap = libc.mmap
        self._mmap.restype = ctypes.c_void_p
        self._mmap.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long,
        ]
        self._munmap = libc.munmap
        self._munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self._mincore = libc.mincore
        self._mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        # mincore only defines the low bit of each byte; map every byte to 0 or 1.
        self._bit = bytes(i & 1 for i in range(256))

    def pages(self, fd: int, offset: int, length: int) -> bytes | None:
        """One byte per page of [offset, offset+length): 1 resident, 0 not. offset must be
        page-aligned. None if the range cannot be mapped (e.g. a direct-io FUSE file)."""
        if length <= 0:
            return b""
        addr = self._mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            return None
        try:
            vec = ctypes.create_string_buffer((length + PAGE - 1) // PAGE)
            if self._mincore(addr, length, vec) != 0:
                return None
            return vec.raw.translate(self._bit)
        finally:
            self._munmap(addr, length)


def load_residency() -> Residency | None:
    try:
        return Residency()
    except (OSError, AttributeError):
        return None


def cold_runs(vec: bytes, offset: int, length: int) -> list[tuple[int, int]]:
    """(offset, length) ranges covering the non-resident pages of a range, merging runs split
    by resident gaps shorter than MERGE_GAP."""
    runs: list[tuple[int, int]] = []
    end = offset + length
    pos = vec.find(0)
    while pos >= 0:
        stop = vec.find(1, pos)
        stop = len(vec) if stop < 0 else stop
        start_b, stop_b = offset + pos * PAGE, min(end, offset + stop * PAGE)
        if runs and start_b - (runs[-1][0] + runs[-1][1]) < MERGE_GAP:
            runs[-1] = (runs[-1][0], stop_b - runs[-1][0])
        else:
            runs.append((start_b, stop_b - start_b))
        pos = vec.find(0, stop)
    return runs


# --------------------------------------------------------------------------------------------
# Warming


class Stats:
    def __init__(self, files: int, total: int) -> None:
        self.lock = threading.Lock()
        self.files = files
        self.total = total
        self.warmed = 0
        self.skipped = 0
        self.errors = 0
        self.bad: set[int] = set()  # files already counted as skipped or errored

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


def _read_range(fd: int, offset: int, length: int, buf: memoryview, stop: threading.Event) -> int:
    done = 0
    while done < length and not stop.is_set():
        want = min(len(buf), length - done)
        n = os.preadv(fd, [buf[:want]], offset + done)
        if n <= 0:  # truncated underneath us
            break
        done += n
    return done


def warm_chunk(
    files: list[FileEntry], chunk: Chunk, res: Residency | None, stats: Stats,
    *, buf: memoryview, stop: threading.Event,
) -> None:
    path = files[chunk.file].path
    try:
        # O_NONBLOCK: a FIFO swapped in after planning must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
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
        vec = res.pages(fd, chunk.offset, chunk.length) if res else None
        runs = [(chunk.offset, chunk.length)] if vec is None else cold_runs(vec, chunk.offset, chunk.length)
        for off, length in runs:
            if stop.is_set():
                return
            # Deeper readahead on the stream; WILLNEED queues this run's I/O up front.
            os.posix_fadvise(fd, off, length, os.POSIX_FADV_SEQUENTIAL)
            os.posix_fadvise(fd, off, length, os.POSIX_FADV_WILLNEED)
            stats.add(_read_range(fd, off, length, buf, stop))
    except OSError:
        stats.fail(chunk.file, vanished=False)
    finally:
        os.close(fd)


def measure_resident(files: list[FileEntry], res: Residency | None) -> float | None:
    """Fraction of all pages resident, or None if mincore is unavailable."""
    if res is None:
        return None
    total = resident = 0
    window = 1 << 30
    for entry in files:
        pages = (entry.size + PAGE - 1) // PAGE
        total += pages
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            for off in range(0, entry.size, window):
                vec = res.pages(fd, off, min(window, entry.size - off))
                if vec is None:
                    return None
                resident += vec.count(1)
        finally:
            os.close(fd)
    return 1.0 if total == 0 else resident / total


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


def summary(stats: Stats, elapsed: float, resident: float | None, timed_out: bool) -> str:
    rate = stats.warmed / elapsed if elapsed > 0 else 0.0
    res = "unknown" if resident is None else f"{resident * 100:.1f}%"
    return (
        f"{PREFIX} files={stats.files} bytes={human(stats.total)} warmed={human(stats.warmed)} "
        f"in {elapsed:.1f}s ({human(rate)}/s) resident={res} skipped={stats.skipped} "
        f"errors={stats.errors} timeout={str(timed_out).lower()}"
    )


class Reporter:
    """Emits exactly one summary, whether from the main thread or the watchdog."""

    def __init__(self, log_file: str | None) -> None:
        self.log_file = log_file
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


def warm_in_process(
    roots: list[str], concurrency: int, timeout: float, chunk_bytes: int, log_file: str | None
) -> int:
    """Warms and reports within timeout. Its process may outlive the report: a thread blocked in
    a hung FUSE read cannot be killed until the daemon answers, so warm() runs this in a child."""
    start = time.monotonic()
    hard_deadline = start + timeout
    # The final residency pass and report get a slice of the budget, so the whole run fits.
    warm_deadline = hard_deadline - min(2.0, timeout * 0.1)
    reporter = Reporter(log_file)
    notes: list[str] = []
    stats = Stats(0, 0)
    stop = threading.Event()
    finished = threading.Event()

    def watchdog() -> None:
        # A read stuck in a hung FUSE request cannot be interrupted; leave without it.
        if finished.wait(max(0.0, hard_deadline - time.monotonic())):
            return
        stop.set()
        reporter.emit([f"{PREFIX} {n}" for n in notes] + [
            summary(stats, time.monotonic() - start, None, timed_out=True)
        ])
        os._exit(0)

    threading.Thread(target=watchdog, name="watchdog", daemon=True).start()
    timed_out = False
    resident: float | None = None
    try:
        files, skipped = collect_files(roots, notes)
        stats = Stats(len(files), sum(f.size for f in files))
        stats.skipped = skipped
        chunks: queue.Queue[Chunk] = queue.Queue()
        for c in plan_chunks(files, chunk_bytes):
            chunks.put(c)
        res = load_residency()
        if res is None:
            notes.append("mincore unavailable; reading everything")

        def worker() -> None:
            buf = memoryview(bytearray(READ_BYTES))
            while not stop.is_set():
                try:
                    chunk = chunks.get_nowait()
                except queue.Empty:
                    return
                try:
                    warm_chunk(files, chunk, res, stats, buf=buf, stop=stop)
                except Exception:  # never let one chunk kill a worker
                    stats.fail(chunk.file, vanished=False)

        threads = [
            threading.Thread(target=worker, name=f"warm-{i}", daemon=True)
            for i in range(max(1, min(concurrency, chunks.qsize())))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, warm_deadline - time.monotonic()))
        timed_out = any(t.is_alive() for t in threads)
        stop.set()
        resident = measure_resident(files, res)
    except Exception as e:  # the hook must never fail the container
        notes.append(f"error: {type(e).__name__}: {e}")
        stats.errors += 1
    reporter.emit([f"{PREFIX} {n}" for n in notes] + [
        summary(stats, time.monotonic() - start, resident, timed_out)
    ])
    finished.set()
    return 0


# --------------------------------------------------------------------------------------------
# wait / install


def warm(roots: list[str], concurrency: int, timeout: float, chunk_bytes: int, log_file: str | None) -> int:
    """Runs warm_in_process in a child and relays its report, returning by the timeout even if
    the child is stuck in a FUSE read (such a child exits once the mount answers or goes away)."""
    child_args = [a for d in roots for a in ("--dir", d)] + [
        "--concurrency", str(concurrency), "--chunk-bytes", str(chunk_bytes),
        # Leave the child's report time to reach us before our own deadline.
        "--timeout", str(max(0.1, timeout - min(0.5, timeout * 0.1))), "--in-process",
    ]
    reporter = Reporter(log_file)
    lines: list[str] = []
    reported = threading.Event()
    start = time.monotonic()
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), "warm", *child_args],  # stdlib only: skip site
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as e:
        reporter.emit([f"{PREFIX} error: cannot start worker: {e}; nothing warmed"])
        return 0

    def pump() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            if " timeout=" in lines[-1]:
                break
        reported.set()

    threading.Thread(target=pump, daemon=True).start()
    if not reported.wait(timeout):
        lines.append(f"{PREFIX} worker silent (stuck before it could report)")
        lines.append(summary(Stats(0, 0), time.monotonic() - start, None, timed_out=True))
    reporter.emit(list(lines))
    return 0


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
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(dest, exist_ok=True)
    for name in (os.path.basename(__file__), SH_FALLBACK):
        target = os.path.join(dest, "prewarm.py" if name.endswith(".py") else name)
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


def parse_args(argv: list[str]) -> argparse.Namespace:
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
    w.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    a = sub.add_parser("wait", help="wait for DIR/.modelcache/manifest.json (exit 1 on timeout)")
    a.add_argument("--dir", default=model_dir, required=model_dir is None)
    a.add_argument("--timeout", type=float, default=0.0, help="seconds; 0 waits forever")
    a.add_argument("--interval", type=float, default=2.0)
    i = sub.add_parser("install", help="copy prewarm.py and prewarm.sh into DEST_DIR")
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
        run = warm_in_process if args.in_process else warm
        return run(args.dirs, args.concurrency, max(0.1, args.timeout), args.chunk_bytes, args.log_file)
    args = parse_args(argv)
    if args.cmd == "wait":
        return wait(args.dir, args.timeout, max(0.05, args.interval))
    return install(args.dest)


if __name__ == "__main__":
    # os._exit skips joining worker threads that may sit in a hung read.
    code = main()
    sys.stdout.flush()
    os._exit(code)
