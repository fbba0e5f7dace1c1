"""How prewarm reads: files split into page-aligned ranges over their data extents, each range's cold
pages pulled into the page cache (spliced to /dev/null on local file systems, read on FUSE), within
the memory budget, with residency checked as each range is left. Stdlib-only like prewarm.py.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections import namedtuple

TYPE_CHECKING = False  # not `typing`: see prewarm.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NamedTuple

if TYPE_CHECKING or __package__:
    from modelcache_operator.prewarm.prewarm_files import FileEntry, data_bytes
    from modelcache_operator.prewarm.prewarm_residency import Residency, cold_runs
else:  # imported by prewarm.py run as a script, which put this directory on sys.path
    from prewarm_files import FileEntry, data_bytes
    from prewarm_residency import Residency, cold_runs

PAGE = os.sysconf("SC_PAGE_SIZE")
# On FUSE, a range left partly cold (e.g. pages taken by proactive reclaim since the last run) is
# only re-read if at least this share of it is cold: s3fs/ossfs answer even a 4 KiB read by
# downloading tens of MiB, so chasing scattered holes costs more than the holes are worth.
FUSE_REREAD_SHARE = 0.02
READ_BYTES = 8 << 20
SPLICE_BYTES = 8 << 20  # per sendfile call: a stop request is seen within one
# On FUSE, reads the size of the kernel's own FUSE requests: one big read fans out into many
# concurrent FUSE reads of one file, which s3fs/ossfs serialise and prefetch for one by one.
FUSE_READ_BYTES = 128 << 10


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
            if not entry.fuse:
                # Doubles the kernel's readahead window on this handle: the whole range is wanted.
                # Not on FUSE: a wider window only queues more concurrent requests for one file,
                # which s3fs/ossfs serve one at a time (slower in interleaved runs).
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
