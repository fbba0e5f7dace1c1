#!/usr/bin/env python3
"""Warm the node's page cache with a model's files before a server loads them.

Self-contained and stdlib-only (Python 3.8+): an init container copies this file into an emptyDir
and the serving image's own ``python3`` runs it from a postStart hook.

    prewarm.py warm --dir DIR [--dir DIR2] [--concurrency N] [--timeout S] [--chunk-bytes B] [--log-file P]
    prewarm.py wait --dir DIR [--timeout S] [--interval S]
    prewarm.py install DEST_DIR

``warm`` always exits 0 within ``--timeout``: a hook that fails or hangs would block the pod. The
one exception is exit 3 on a Python older than 3.8, so the hook can fall back to prewarm.sh.

How ``warm`` reads: each file is split into a few large contiguous ranges (about ``total /
concurrency`` bytes, never smaller than ``--chunk-bytes``), one open file handle per range, pulled
front to back into the page cache with sendfile(2) to /dev/null (no copy to user space), so
concurrency spreads across files and within big files. On FUSE mounts (s3fs, ossfs, ...) each file
is read by one handle from its start with 128 KiB reads, at most ``FUSE_FILES_IN_FLIGHT`` files at
once: these daemons serialise the reads of one file and prefetch only ahead of a sequential reader.
Pages already resident are skipped, so a re-run costs one cachestat/mincore call per range.
"""

from __future__ import annotations

import errno
import os
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
    from collections.abc import Callable, Iterable, Iterator
    from typing import NamedTuple

# Heavier modules (argparse, json, ctypes, shutil) are imported where they are used: the warm
# path's fixed cost is paid on every pod start, even when everything is already cached.
# ruff: noqa: PLC0415

PREFIX = "modelcache-prewarm:"
MANIFEST = os.path.join(".modelcache", "manifest.json")
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
# Resident holes smaller than this between two cold runs are re-read rather than split into
# separate small reads: one larger sequential read is cheaper than two seeks.
MERGE_GAP = 1 << 20
SH_FALLBACK = "prewarm.sh"


if TYPE_CHECKING:

    class FileEntry(NamedTuple):
        path: str
        size: int
        fuse: bool = False  # on a FUSE mount

    class Chunk(NamedTuple):
        file: int  # index into the file list
        offset: int
        length: int

else:
    FileEntry = namedtuple("FileEntry", "path size fuse", defaults=(False,))
    Chunk = namedtuple("Chunk", "file offset length")


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
    import json

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


def fuse_devices(mountinfo: str = "/proc/self/mountinfo") -> set[int]:
    """st_dev numbers of the FUSE mounts visible to this process (fstype fuse or fuse.*)."""
    devs: set[int] = set()
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                # id parent major:minor root mountpoint options [optional...] - fstype source super
                if "-" not in fields:
                    continue
                fstype = fields[fields.index("-") + 1]
                if fstype == "fuse" or fstype.startswith(("fuse.", "fuseblk")):
                    major, _, minor = fields[2].partition(":")
                    devs.add(os.makedev(int(major), int(minor)))
    except (OSError, ValueError, IndexError):
        pass  # unknown: treat every file as local
    return devs


def collect_files(roots: Iterable[str], log: list[str]) -> tuple[list[FileEntry], int]:
    """Resolves each root's file list (manifest first, else a walk) into regular files inside
    their root, deduplicated by inode. Returns (files, skipped)."""
    files: list[FileEntry] = []
    seen: set[tuple[int, int]] = set()
    skipped = 0
    fuse = fuse_devices()
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
            files.append(FileEntry(path, st.st_size, st.st_dev in fuse))
    return files, skipped


def plan_chunks(files: list[FileEntry], concurrency: int, min_range: int) -> list[Chunk]:
    """Splits files into a few large page-aligned ranges, in file order (a timeout leaves the
    first files complete). Ranges aim at an even share of all bytes per worker, so every worker
    streams until the end; a file gets at most `concurrency` ranges and none shorter than
    min_range, since each range costs an open and a new stream. A FUSE file is one range."""
    concurrency = max(1, concurrency)
    share = -(-sum(f.size for f in files) // concurrency)
    chunks: list[Chunk] = []
    for i, entry in enumerate(files):
        if entry.size <= 0:
            continue
        parts = 1 if entry.fuse else max(
            1, min(concurrency, entry.size // max(PAGE, min_range), round(entry.size / max(1, share))))
        step = -(-entry.size // parts)
        step += -step % PAGE
        for off in range(0, entry.size, step):
            chunks.append(Chunk(i, off, min(step, entry.size - off)))
    return chunks


# --------------------------------------------------------------------------------------------
# Residency: mincore(2) through ctypes


class Residency:
    """Page-cache residency of file ranges via mmap + mincore, without touching the pages; counts
    via cachestat(2) (Linux 6.5+) where it answers, which is ~6x cheaper per page than mincore
    and is most of what a warm re-run does (2 GiB: 13 ms vs 78 ms of CPU)."""

    def __init__(self) -> None:
        import ctypes
        import mmap

        libc = ctypes.CDLL(None, use_errno=True)
        self._ctypes = ctypes
        self._prot, self._flags = mmap.PROT_READ, mmap.MAP_SHARED
        self._failed = ctypes.c_void_p(-1).value
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
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._range = (ctypes.c_uint64 * 2)()  # struct cachestat_range {off, len}
        self._stat = (ctypes.c_uint64 * 5)()  # struct cachestat {nr_cache, nr_dirty, ...}
        self._lock = threading.Lock()  # guards the two structs
        self._cachestat = sys.platform.startswith("linux")

    def count(self, fd: int, offset: int, length: int) -> int | None:
        """Resident pages of [offset, offset+length) by cachestat(2), or None where it is
        unavailable (older kernel, seccomp) or would not tell this process the truth."""
        if not self._cachestat or length <= 0 or not mincore_truthful(os.fstat(fd).st_uid):
            return None
        c = self._ctypes
        with self._lock:
            self._range[0], self._range[1] = offset, length
            # 451 is cachestat on every architecture (the generic syscall table).
            if self._syscall(c.c_long(451), c.c_long(fd), self._range, self._stat, c.c_long(0)) != 0:
                if c.get_errno() in (38, 1):  # ENOSYS, EPERM: never going to work here
                    self._cachestat = False
                return None
            return int(self._stat[0])

    def pages(self, fd: int, offset: int, length: int) -> bytes | None:
        """One byte per page of [offset, offset+length): 1 resident, 0 not. offset must be
        page-aligned. None if the range cannot be mapped (e.g. a direct-io FUSE file), or if the
        kernel would not tell this process the truth about it."""
        if length <= 0:
            return b""
        if not mincore_truthful(os.fstat(fd).st_uid):
            return None
        addr = self._mmap(None, length, self._prot, self._flags, fd, offset)
        if addr is None or addr == self._failed:
            return None
        try:
            vec = self._ctypes.create_string_buffer((length + PAGE - 1) // PAGE)
            if self._mincore(addr, length, vec) != 0:
                return None
            return vec.raw.translate(self._bit)
        finally:
            self._munmap(addr, length)


CAP_FOWNER = 3


def _has_cap_fowner() -> bool:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_FOWNER & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


_FOWNER: list[bool] = []  # computed once


def mincore_truthful(file_uid: int) -> bool:
    """Since Linux 5.2 mincore reports every page of a file mapping as resident to a process that
    neither owns the file nor holds CAP_FOWNER (nor may write it, which a read-only mount rules out).
    A serving container running as another user than the downloader would skip everything."""
    if file_uid == os.geteuid():
        return True
    if not _FOWNER:
        _FOWNER.append(_has_cap_fowner())
    return _FOWNER[0]


def load_residency() -> Residency | None:
    try:
        return Residency()
    except (ImportError, OSError, AttributeError):
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
    def __init__(self, files: int, total: int, pages: int = 0) -> None:
        self.lock = threading.Lock()
        self.files = files
        self.total = total
        self.pages = pages  # pages of all files; ranges never checked count as not resident
        self.warmed = 0
        self.skipped = 0
        self.errors = 0
        self.bad: set[int] = set()  # files already counted as skipped or errored
        # Pages found resident as each range was left, and pages checked. resident_pages is
        # None once a range could not be checked (no mincore, or a mount that refuses mmap).
        self.resident_pages: int | None = 0
        self.checked_pages = 0

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
        for off, length in runs:
            if stop.is_set():
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
    # The report gets a slice of the budget, so the whole run fits.
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
        stats = Stats(len(files), sum(f.size for f in files), sum(-(-f.size // PAGE) for f in files))
        stats.skipped = skipped
        chunks = plan_chunks(files, concurrency, chunk_bytes)
        local = [c for c in chunks if not files[c.file].fuse]
        fuse = [c for c in chunks if files[c.file].fuse]
        pools = [(iter(local), min(concurrency, len(local))),
                 (iter(fuse), min(concurrency, FUSE_FILES_IN_FLIGHT, len(fuse)))]
        take = threading.Lock()
        res = load_residency()
        if res is None:
            notes.append("mincore unavailable; reading everything")
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
            t.join(max(0.0, warm_deadline - time.monotonic()))
        timed_out = any(t.is_alive() for t in threads)
        stop.set()
        resident = stats.resident()
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
    the child is stuck in a FUSE read (such a child exits once the mount answers or goes away).
    The child is a fork of this process, not a new interpreter: a warm re-run is mostly fixed
    cost, and a second Python start-up (plus importing subprocess) was a large share of it."""
    child_timeout = max(0.1, timeout - min(0.5, timeout * 0.1))  # leaves its report time to reach us
    reporter = Reporter(log_file)
    lines: list[str] = []
    reported = threading.Event()
    start = time.monotonic()
    try:
        sys.stdout.flush()  # nothing buffered may be written twice
        rfd, wfd = os.pipe()
        pid = os.fork()  # before any thread of ours exists
    except OSError as e:
        reporter.emit([f"{PREFIX} error: cannot start worker: {e}; nothing warmed"])
        return 0
    if pid == 0:  # the child: warm, report on the pipe, never return into the caller
        try:
            os.close(rfd)
            os.setsid()  # out of the hook's process group
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(wfd, 1)
            os.dup2(null, 2)
            warm_in_process(roots, concurrency, child_timeout, chunk_bytes, None)
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
    if not reported.wait(timeout):
        lines.append(f"{PREFIX} worker silent (stuck before it could report)")
        lines.append(summary(Stats(0, 0), time.monotonic() - start, None, timed_out=True))
    reporter.emit(list(lines))
    return 0  # the child is reaped when we exit (a stuck one by init)


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
    if sys.version_info < (3, 8):  # noqa: UP036 - the serving image's python3, not ours
        sys.exit(3)  # the hook runs prewarm.sh instead
    # os._exit skips joining worker threads that may sit in a hung read.
    code = main()
    sys.stdout.flush()
    os._exit(code)
