"""Streamed hashing with constant memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

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


def git_blob_sha1(path: Path, size: int) -> str:
    digest = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
