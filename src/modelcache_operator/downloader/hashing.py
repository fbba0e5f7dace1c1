"""Streamed hashing with constant memory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path, limit: int | None = None) -> hashlib._Hash:
    """The sha256 state of a file's first `limit` bytes (all of it when None)."""
    digest = hashlib.sha256()
    remaining = limit
    with path.open("rb") as f:
        while remaining is None or remaining > 0:
            block = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest


class HashingWriter:
    """A write-only file wrapper that hashes what passes through it, so a download needs no second read.

    Supports exactly what huggingface_hub's `http_get` does with its file: write, tell, and seek+truncate
    back to where the download started when a server ignores a Range request (the hash restarts there too).
    """

    def __init__(self, f: BinaryIO, digest: hashlib._Hash, on_bytes: Callable[[int], None]) -> None:
        self._f = f
        self._base = f.tell()
        self._base_digest = digest.copy()
        self.digest = digest
        self._on_bytes = on_bytes

    def write(self, data: bytes) -> int:
        self._f.write(data)
        self.digest.update(data)
        self._on_bytes(len(data))
        return len(data)

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset > self._f.tell():
            raise OSError("HashingWriter only rewinds")
        if offset < self._base:
            # A full restart: the prefix we had is gone too.
            self._base, self._base_digest = 0, hashlib.sha256()
        if offset != self._base:
            raise OSError(f"HashingWriter can rewind only to {self._base}, not {offset}")
        self._on_bytes(offset - self._f.tell())
        self.digest = self._base_digest.copy()
        return self._f.seek(offset)

    def truncate(self, size: int | None = None) -> int:
        return self._f.truncate(size)

    def flush(self) -> None:
        self._f.flush()
