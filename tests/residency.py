"""Page-cache residency helpers for tests and benchmarks: measure with mincore(2), evict with
posix_fadvise(DONTNEED). Written independently of prewarm.py so they can check it."""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterable
from pathlib import Path

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_LOW_BIT = bytes(i & 1 for i in range(256))  # mincore defines only bit 0 of each byte


def resident_pages(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(resident pages, total pages) of one file."""
    size = os.path.getsize(path)
    if size == 0:
        return 0, 0
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            return bytes(vec).translate(_LOW_BIT).count(1), pages
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def resident_fraction(paths: Iterable[str | os.PathLike[str]]) -> float:
    """Fraction of all pages of paths that are in the page cache (1.0 for no pages)."""
    resident = total = 0
    for p in paths:
        r, t = resident_pages(p)
        resident += r
        total += t
    return 1.0 if total == 0 else resident / total


def evict(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Drops paths from the page cache: write back dirty pages first, which DONTNEED skips."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def files_under(root: str | os.PathLike[str]) -> list[Path]:
    """Regular files under root (not following symlinks)."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink())


def write_file(path: str | os.PathLike[str], size: int, seed: int = 0) -> None:
    """Writes size bytes of cheap non-zero data (zeros could be stored sparsely by some filesystems)."""
    block = bytes((seed + i) % 251 + 1 for i in range(1 << 20))
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
