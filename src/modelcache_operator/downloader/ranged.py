"""One big file over several connections: parallel ranged GETs, written strictly in order, hashed as it streams.

Hubs and CDNs cap each connection, so one stream is the bottleneck for a 100 GB shard. Here up to
`connections` parts of `part_size` bytes are in flight at once, each its own `Range` request into its own
buffer; the calling thread takes the parts in file order and hands each to the `SequentialFile` (sha256 and
an append-only write), so the file is written front to back exactly as a single stream would write it.
Memory is bounded per process, however many big files download at once: at most `PARTS_IN_MEMORY` part
buffers exist (in flight or waiting for their turn), shared by all files; a file whose window is empty
waits for a free buffer, one with parts in hand writes them first, so the files never wait on each other.

A part that breaks is fetched again (a few times); a part that keeps failing raises NetworkError with the
file written up to the last whole part before it, so the outer retry resumes by appending.
"""

from __future__ import annotations

import concurrent.futures as cf
import http.client
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable

from .connections import Connections
from .errors import ChecksumMismatch, NetworkError
from .httpfetch import CONTENT_RANGE, download
from .sequential import SequentialFile

log = logging.getLogger(__name__)

# Each part costs its connection a request's turnaround (a round trip to a CDN); at 16 MiB that is half the
# idle time of 8 MiB parts. Twelve buffers keep 8 connections busy with 4 parts waiting for their turn.
PART_SIZE = 16 << 20
PART_ATTEMPTS = 4
PARTS_IN_MEMORY = 12  # 192 MiB of part buffers per process
RANGED_MIN_BYTES = 64 << 20  # smaller files gain little from parallel ranges; the file-level pool covers them


class _Buffers:
    """A fixed set of part buffers, allocated once: fresh 8 MiB allocations per part would churn the
    allocator's per-thread arenas and grow the RSS far past the buffers in use."""

    def __init__(self) -> None:
        self._free: queue.LifoQueue[bytearray] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()

    def take(self, wait: bool) -> bytearray | None:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._made < PARTS_IN_MEMORY:
                self._made += 1
                return bytearray(PART_SIZE)
        return self._free.get() if wait else None

    def give(self, buf: bytearray) -> None:
        self._free.put(buf)


_buffers = _Buffers()


class RangesUnsupported(Exception):
    """The server answered a Range request with the whole file: fetch it as one stream instead."""


def fetch_body(client: Connections, url: str, out: SequentialFile, *, headers: dict[str, str],
               auth: dict[str, str], connections: int, on_bytes: Callable[[int], None], timeout: float,
               what: str) -> None:
    """The rest of `out` from `url`: parallel ranges for a big remainder, one stream for a small one or a
    server that ignores Range."""
    if connections > 1 and out.size - out.position >= RANGED_MIN_BYTES:
        try:
            download_ranged(client, url, out, headers=headers, auth=auth, connections=connections,
                            on_bytes=on_bytes, timeout=timeout, what=what)
        except RangesUnsupported:
            log.info("%s: the server ignores Range; one stream for the rest", what)
    download(client, url, out, headers=headers, auth=auth, on_bytes=on_bytes, timeout=timeout, what=what)


def download_ranged(client: Connections, url: str, out: SequentialFile, *,
                    headers: dict[str, str], auth: dict[str, str], connections: int,
                    on_bytes: Callable[[int], None], timeout: float, what: str,
                    part_size: int = PART_SIZE) -> None:
    """Bytes `out.position..out.size` of `url` into `out` over up to `connections` parallel ranged GETs."""
    starts = deque(range(out.position, out.size, part_size))

    def fetch(first: int, buf: bytearray) -> memoryview:
        last = min(first + part_size, out.size) - 1
        for attempt in range(1, PART_ATTEMPTS + 1):
            try:
                return _get_part(client, url, first, last, memoryview(buf)[:last - first + 1], size=out.size,
                                 headers=headers, auth=auth, timeout=timeout, what=what)
            except NetworkError as e:
                if attempt == PART_ATTEMPTS:
                    raise
                log.info("%s: part at %d failed (%s); fetching it again", what, first, e)
        raise AssertionError("unreachable")

    with cf.ThreadPoolExecutor(connections, thread_name_prefix="range") as pool:
        window: deque[tuple[cf.Future[memoryview], bytearray]] = deque()
        try:
            while starts or window:
                # Wait for a buffer only with none in hand; otherwise take what is free and write meanwhile.
                while starts and len(window) < 2 * connections:
                    buf = _buffers.take(wait=not window)
                    if buf is None:
                        break
                    window.append((pool.submit(fetch, starts.popleft(), buf), buf))
                head, buf = window.popleft()
                try:
                    part = head.result()  # strictly in file order
                    out.write(part)
                    on_bytes(len(part))
                finally:
                    _buffers.give(buf)
        finally:
            for fut, buf in window:
                if not fut.cancel():
                    fut.exception()  # wait: the buffer is not free before its part ends
                _buffers.give(buf)


def _get_part(client: Connections, url: str, first: int, last: int, buf: memoryview, *, size: int,
              headers: dict[str, str], auth: dict[str, str], timeout: float, what: str) -> memoryview:
    with client.get(url, headers={**headers, "Range": f"bytes={first}-{last}"}, auth=auth, timeout=timeout,
                    what=what) as resp:
        if resp.status == 200:
            raise RangesUnsupported()
        m = CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
        if resp.status != 206 or m is None or int(m.group(1)) != first:
            raise NetworkError(f"{what}: asked for bytes {first}-{last}, got HTTP {resp.status} "
                               f"{resp.headers.get('Content-Range')}")
        if m.group(2) != "*" and int(m.group(2)) != size:
            raise ChecksumMismatch(f"{what}: the hub serves {m.group(2)} bytes, listing says {size}")
        done = 0
        while done < len(buf):
            try:
                n = resp.readinto(buf[done:])
            except (OSError, http.client.HTTPException) as e:
                raise NetworkError(f"{what}: {type(e).__name__} at byte {first + done}") from None
            if not n:
                raise NetworkError(f"{what}: part at {first} ended early, {done} of {len(buf)} bytes")
            done += n
    return buf
