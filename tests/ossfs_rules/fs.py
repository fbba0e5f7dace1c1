"""The ossfs-rules FUSE file system: a directory ("the bucket") seen through ossfs 2.0's documented write rules.

- Writes are sequential and append-only: a write anywhere but at the end of what this handle has written is
  refused (EINVAL), and so is truncating to anything but zero (EPERM).
- A file being written lives in this mount's private staging area; it is uploaded to the bucket, and visible
  to other mounts, only when it is closed (FLUSH). A killed writer's file is uploaded as far as it got,
  since the kernel closes its descriptors.
- Opening an existing file for writing without O_TRUNC is refused (EPERM) unless the mount allows appends
  (`--append`), in which case writes continue at its end.
- rename is not atomic: the target disappears, the data is copied, then the source is removed.
- No lock operations: flock and O_EXCL are decided by each mount's kernel view alone, so two mounts of one
  bucket exclude nothing from each other.

Every upload, rename and refusal is appended to `--log` as a JSON line, for tests to check what the writer did.
Run as `python -m tests.ossfs_rules BUCKET MOUNTPOINT --log FILE [--append]` (see `tests.ossfs_rules.mount`).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuse import FUSE, FuseOSError, Operations

RENAME_GAP_SECONDS = 0.05  # the moment a non-atomic rename shows neither file


@dataclass
class Writer:
    path: str
    staged: Path
    fd: int
    size: int  # bytes written so far: the only offset a write may use
    appended_from: int  # size of the object this handle continues (0 for a new or truncated file)
    uploaded: bool = False


class OssfsRules(Operations):  # type: ignore[misc]
    def __init__(self, bucket: Path, staging: Path, log: Path, append: bool) -> None:
        self.bucket = bucket
        self.staging = staging
        self.append = append
        self._log = log.open("a", buffering=1)
        self._lock = threading.Lock()
        self._writers: dict[int, Writer] = {}
        self._readers: dict[int, int] = {}  # fh -> fd
        self._next = 1

    # ----- helpers -----

    def _real(self, path: str) -> Path:
        return self.bucket / path.lstrip("/")

    def event(self, kind: str, **fields: Any) -> None:
        with self._lock:
            self._log.write(json.dumps({"event": kind, "t": time.time(), **fields}) + "\n")

    def refuse(self, code: int, rule: str, **fields: Any) -> FuseOSError:
        self.event("refused", rule=rule, errno=errno.errorcode[code], **fields)
        return FuseOSError(code)

    def _writer_of(self, path: str) -> Writer | None:
        return next((w for w in self._writers.values() if w.path == path), None)

    def _new_fh(self) -> int:
        with self._lock:
            fh, self._next = self._next, self._next + 1
            return fh

    def _start_writer(self, path: str, copy_from: Path | None) -> int:
        if self._writer_of(path) is not None:
            raise self.refuse(errno.EBUSY, "one writer per file", path=path)
        fd, staged = tempfile.mkstemp(dir=self.staging)
        appended_from = 0
        if copy_from is not None:
            with open(copy_from, "rb") as src, open(fd, "wb", closefd=False) as dst:
                shutil.copyfileobj(src, dst)
            appended_from = copy_from.stat().st_size
        fh = self._new_fh()
        self._writers[fh] = Writer(path, Path(staged), fd, appended_from, appended_from)
        return fh

    # ----- metadata -----

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        w = self._writer_of(path)
        try:
            st = os.lstat(w.staged if w else self._real(path))
        except FileNotFoundError:
            raise FuseOSError(errno.ENOENT) from None
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")
        attrs = {k: getattr(st, k) for k in keys}
        return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        names = set(os.listdir(self._real(path)))
        prefix = path.rstrip("/") + "/"
        names |= {w.path[len(prefix):] for w in self._writers.values()
                  if w.path.startswith(prefix) and "/" not in w.path[len(prefix):]}
        return [".", "..", *sorted(names)]

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.bucket)
        return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                            "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._real(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._real(path))

    def unlink(self, path: str) -> None:
        try:
            os.unlink(self._real(path))
        except FileNotFoundError:
            if self._writer_of(path) is None:
                raise FuseOSError(errno.ENOENT) from None

    def chmod(self, path: str, mode: int) -> None:
        return None  # object stores keep no modes; ossfs accepts and ignores

    def chown(self, path: str, uid: int, gid: int) -> None:
        return None

    def utimens(self, path: str, times: tuple[float, float] | None = None) -> None:
        if self._writer_of(path) is None:
            os.utime(self._real(path), times)

    def symlink(self, target: str, source: str) -> None:
        raise self.refuse(errno.ENOTSUP, "no symlinks", path=target)

    def link(self, target: str, source: str) -> None:
        raise self.refuse(errno.ENOTSUP, "no hard links", path=target)

    def rename(self, old: str, new: str) -> None:
        src, dst = self._real(old), self._real(new)
        if self._writer_of(old) is not None:
            raise self.refuse(errno.EBUSY, "rename of a file being written", path=old)
        if src.is_dir():
            raise self.refuse(errno.ENOTSUP, "no directory rename", path=old)
        if not src.exists():
            raise FuseOSError(errno.ENOENT)
        size = src.stat().st_size
        self.event("rename", old=old, new=new, size=size)
        # Not atomic: for a moment neither name holds the file, then both do.
        dst.unlink(missing_ok=True)
        time.sleep(RENAME_GAP_SECONDS)
        tmp = self.staging / f"rename-{self._new_fh()}"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        src.unlink()

    # ----- data -----

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return self._start_writer(path, None)

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            real = self._real(path)
            if flags & os.O_TRUNC or not real.exists():
                return self._start_writer(path, None)
            if not self.append:
                raise self.refuse(errno.EPERM, "no writes to an existing file", path=path)
            return self._start_writer(path, real)
        w = self._writer_of(path)
        fd = os.open(w.staged if w else self._real(path), os.O_RDONLY)
        fh = self._new_fh()
        self._readers[fh] = fd
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        fd = self._readers.get(fh)
        if fd is None:
            fd = self._writers[fh].fd  # read back through a writing handle (r+ / w+)
        return os.pread(fd, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        w = self._writers.get(fh)
        if w is None:
            raise self.refuse(errno.EBADF, "write on a read-only handle", path=path)
        if w.uploaded:
            raise self.refuse(errno.EINVAL, "write after close", path=path)
        if offset != w.size:
            raise self.refuse(errno.EINVAL, "sequential append-only writes", path=path, offset=offset,
                              size=w.size)
        n = os.pwrite(w.fd, data, offset)
        w.size += n
        return n

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        w = self._writers.get(fh) if fh is not None else self._writer_of(path)
        if length != 0:
            raise self.refuse(errno.EPERM, "truncate only to zero", path=path, length=length)
        if w is not None:
            if w.size:
                raise self.refuse(errno.EPERM, "truncate of written data", path=path, size=w.size)
            return
        real = self._real(path)
        if not real.exists():
            raise FuseOSError(errno.ENOENT)
        real.write_bytes(b"")  # replacing the object with an empty one, as a PUT does
        self.event("upload", path=path, size=0, appendedFrom=0)

    def flush(self, path: str, fh: int) -> None:
        """close(2) sends FLUSH and waits for it (RELEASE comes later, asynchronously): the upload is here."""
        w = self._writers.get(fh)
        if w is None or w.uploaded:
            return
        real = self._real(w.path)
        w.uploaded = True
        if not real.parent.is_dir():
            return  # its directory went away meanwhile: nothing to upload into
        tmp = self.staging / f"upload-{self._new_fh()}"
        os.link(w.staged, tmp)
        os.replace(tmp, real)  # whole, at once
        self.event("upload", path=w.path, size=w.size, appendedFrom=w.appended_from)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        return None

    def release(self, path: str, fh: int) -> None:
        fd = self._readers.pop(fh, None)
        if fd is not None:
            os.close(fd)
            return
        w = self._writers.pop(fh)
        os.close(w.fd)
        w.staged.unlink()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.ossfs_rules")
    p.add_argument("bucket", type=Path)
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--append", action="store_true", help="allow appending to an existing file")
    a = p.parse_args()
    staging = Path(tempfile.mkdtemp(prefix="ossfs-rules-staging-", dir=a.bucket.parent))
    ops = OssfsRules(a.bucket.resolve(), staging, a.log, a.append)
    # No kernel attribute or entry cache, so every mount sees the bucket as it is; atomic O_TRUNC so that
    # open(O_TRUNC) arrives as one open and not as a truncate of an existing object.
    FUSE(ops, str(a.mountpoint), foreground=True, nothreads=False, allow_other=True, default_permissions=False,
         attr_timeout=0, entry_timeout=0, negative_timeout=0, atomic_o_trunc=True, big_writes=True,
         max_write=1 << 20, fsname="ossfs-rules")
