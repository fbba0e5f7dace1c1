"""Prepares one serving pod's compile-cache folder, in the pod's init container (the operator image), with
the namespace's whole compile claim mounted writable at --root.

Write safety: every start of any pod on the claim takes an exclusive flock on ``<root>/.lock`` (NFSv4 and
EFS carry it to the server; ossfs has no cross-node locks, so there only one node's starts are serialised)
while it creates folders and evicts. Eviction first renames a folder to ``.evicting-*`` (one atomic rename,
so no engine ever sees it half-deleted under its name) and only then removes it. The engines' own writes
inside a key folder need no lock from us: Triton and Inductor write each artifact to a temporary file and
rename it into place, and their file names are hashes of what they compile, so two pods compiling the same
kernel write the same bytes to the same name and the last rename wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from ..builders.compile_cache import STAMP, Entry, eviction_plan

LOCK = ".lock"


def _size(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # an engine renamed a temp file meanwhile
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def entries(root: Path) -> list[Entry]:
    """Every key folder (<gpu>/<engine>-<version>) under root, with its size and last use."""
    found: list[Entry] = []
    for gpu in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for key in sorted(p for p in gpu.iterdir() if p.is_dir() and not p.is_symlink()):
            stamp = key / STAMP
            last_used = stamp.stat().st_mtime if stamp.exists() else 0.0
            found.append(Entry(f"{gpu.name}/{key.name}", _size(key), last_used))
    return found


def prepare(root: Path, key: str, subdirs: list[str], limit_bytes: int) -> list[str]:
    """Creates root/key (and its engine subfolders), marks it used now, and evicts LRU folders other than it
    until the namespace's compile caches fit under limit_bytes. Returns the evicted folders."""
    with open(root / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder = root / key
        for sub in ["", *subdirs]:
            path = folder / sub
            path.mkdir(parents=True, exist_ok=True)
            # Serving images run as any uid; the claim is this namespace's alone.
            path.chmod(0o777)
        (folder / STAMP).touch()
        os.utime(folder / STAMP, (time.time(), time.time()))
        evicted = eviction_plan(entries(root), limit_bytes, keep=key)
        for name in evicted:
            doomed = root / f".evicting-{uuid.uuid4().hex[:8]}"
            os.rename(root / name, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        for leftover in root.glob(".evicting-*"):  # from a pod killed mid-eviction
            shutil.rmtree(leftover, ignore_errors=True)
    return evicted


def main(root: str, key: str, subdirs: list[str], limit_bytes: int) -> int:
    if key.startswith("/") or ".." in key.split("/") or key.count("/") != 1:
        print(f"modelcache compile-cache: {key!r} is not <gpu>/<engine>-<version>", file=sys.stderr)
        return 2
    evicted = prepare(Path(root), key, subdirs, limit_bytes)
    print(f"modelcache compile-cache: {key} ready; evicted {len(evicted)} folder(s)"
          + (f": {', '.join(evicted)}" if evicted else ""))
    return 0
