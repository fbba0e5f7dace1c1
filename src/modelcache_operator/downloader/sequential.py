"""One file written the way object-store mounts (ossfs 2.0, s3fs, gcsfuse) accept it.

Each file is written once, front to back, through one open, then fsynced and closed. A partial file from an
earlier run is continued by opening it for append where the backend allows it; where it does not (ossfs 2.0
refuses writes to an existing object), the file is fetched again from byte 0. Nothing is ever rewritten in
place: no `r+`, no seek, no truncate to a length.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .hashing import sha256_file

log = logging.getLogger(__name__)


class SequentialFile:
    def __init__(self, path: Path, size: int, on_bytes: Callable[[int], None]) -> None:
        """`on_bytes` gets every change to the bytes counted as done; a partial file was counted already."""
        self.path = path
        self.size = size
        self._on_bytes = on_bytes
        self._fh: BinaryIO | None = None
        self.start = 0  # where this open continues the file
        self.position = 0  # where the next write goes
        self.digest = hashlib.sha256()  # of bytes 0..position

    def __enter__(self) -> SequentialFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.stat().st_size if self.path.is_file() else 0
        if partial > self.size:
            self._on_bytes(-self.size)  # counted as done, but it is not this file
            self._fresh()
        elif partial:
            self._continue(partial)
        else:
            self._fresh()
        return self

    def _continue(self, partial: int) -> None:
        digest = sha256_file(self.path, partial)
        try:
            self._fh = self.path.open("ab")
        except OSError as e:
            log.info("%s: the volume does not append to an existing file (%s); fetching it again", self.path.name,
                     e.strerror)
            self._on_bytes(-partial)
            self._fresh()
            return
        self.start = self.position = partial
        self.digest = digest

    def _fresh(self) -> None:
        self.path.unlink(missing_ok=True)
        self._fh = self.path.open("wb")
        self.start = self.position = 0
        self.digest = hashlib.sha256()

    def restart(self) -> None:
        """The server sends the whole file after all: drop what is there and begin again at byte 0."""
        assert self._fh is not None
        self._fh.close()
        self._on_bytes(-self.position)
        self._fresh()

    def write(self, data: memoryview) -> None:
        assert self._fh is not None
        self.digest.update(data)
        self._fh.write(data)
        self.position += len(data)

    def __exit__(self, et: type[BaseException] | None, *rest: object) -> None:
        assert self._fh is not None
        try:
            if et is None:
                self._fh.flush()
                os.fsync(self._fh.fileno())  # once per file: durable before the manifest says so
        finally:
            self._fh.close()
