"""Which bytes prewarm reads: the manifest's files (else a walk of the folder), regular files only,
inside their root, weights first, and of each file only its data extents (holes skipped).

Stdlib-only and self-contained like prewarm.py, which imports it from the same directory.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import namedtuple

TYPE_CHECKING = False  # not `typing`: see prewarm.py
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import NamedTuple

MANIFEST = os.path.join(".modelcache", "manifest.json")
PAGE = os.sysconf("SC_PAGE_SIZE")
# Tensor files: what the server needs first, so a budget or a timeout leaves them warm.
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npz")
# Data extents closer than this are read as one range; past MAX_EXTENTS the rest is one range.
EXTENT_MERGE_GAP = 1 << 20
MAX_EXTENTS = 4096


if TYPE_CHECKING:

    class FileEntry(NamedTuple):
        path: str
        size: int
        fuse: bool = False  # on a FUSE mount
        # (offset, length) data ranges, page-aligned; None: the whole file is data.
        extents: tuple[tuple[int, int], ...] | None = None

else:
    FileEntry = namedtuple("FileEntry", "path size fuse extents", defaults=(False, None))


def data_bytes(entry: FileEntry) -> int:
    return entry.size if entry.extents is None else sum(n for _, n in entry.extents)


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
    import json  # noqa: PLC0415 - only when a manifest exists

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


def data_extents(fd: int, size: int) -> tuple[tuple[int, int], ...] | None:
    """Page-aligned (offset, length) data ranges of an open file via SEEK_DATA/SEEK_HOLE, nearby
    ones merged; None if the file system cannot tell (then the whole file counts as data). A
    sparse file pre-allocated by some tool reads as gigabytes of zeros that evict real data."""
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None or size <= 0:
        return None
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, seek_data)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data past pos
                break
            return None  # EINVAL etc.: not supported here
        end = min(size, os.lseek(fd, start, seek_hole))
        start -= start % PAGE
        end += -end % PAGE
        end = min(end, size)
        if out and (start - (out[-1][0] + out[-1][1]) < EXTENT_MERGE_GAP or len(out) >= MAX_EXTENTS):
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((start, end - start))
        pos = max(end, pos + PAGE)
    return tuple(out)


def is_weight(path: str) -> bool:
    return path.lower().endswith(WEIGHT_SUFFIXES)


def by_priority(files: list[FileEntry]) -> list[FileEntry]:
    """Weights first, each group in the order given (manifest order, or the walk's)."""
    return [f for f in files if is_weight(f.path)] + [f for f in files if not is_weight(f.path)]


def _entry(path: str, fuse: set[int], root_real: str, seen: set[tuple[int, int]]) -> FileEntry | str | None:
    """The FileEntry of path; None for a second name of a file already listed; else why not."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    if (st.st_dev, st.st_ino) in seen:  # hard link or a second symlink to the same blob
        return None
    if not stat.S_ISREG(st.st_mode) or not _inside(root_real, path):
        return "not-regular"  # FIFO, socket, device, directory, or a link out of root: never opened
    seen.add((st.st_dev, st.st_ino))
    if st.st_dev in fuse:
        # The daemon may not answer lseek, and object stores hold no holes.
        return FileEntry(path, st.st_size, True)
    try:
        # O_NONBLOCK: a FIFO swapped in since the stat must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return "unreadable"
    try:
        again = os.fstat(fd)
        if not stat.S_ISREG(again.st_mode) or (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
            return "not-regular"
        return FileEntry(path, again.st_size, False, data_extents(fd, again.st_size))
    finally:
        os.close(fd)


class Collected:
    """What collect_files found: files to read, plus what was left out and why."""

    def __init__(self) -> None:
        self.files: list[FileEntry] = []
        self.skipped = 0  # manifest entries or paths that are not readable regular files in root
        self.reasons: dict[str, int] = {}
        self.roots_missing = 0
        self.notes: list[str] = []

    def skip(self, reason: str, n: int = 1) -> None:
        if n:
            self.skipped += n
            self.reasons[reason] = self.reasons.get(reason, 0) + n


def _root_paths(root: str, out: Collected) -> list[str] | None:
    """A root's candidate paths: its manifest's, else a walk; None if the root is not a folder."""
    if not os.path.isdir(root):
        out.roots_missing += 1
        return None
    try:
        with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
            paths, rejected = manifest_paths(root, f.read())
        out.skip("unsafe-path", rejected)
        return paths
    except FileNotFoundError:
        return walk_paths(root)
    except (OSError, ValueError) as e:
        out.notes.append(f"manifest unusable ({type(e).__name__}: {e}); walking {root!r}")
        return walk_paths(root)


def collect_files(roots: Iterable[str]) -> Collected:
    """Resolves each root's file list into regular files inside their root, deduplicated by inode,
    weights first, each with its data extents."""
    out = Collected()
    seen: set[tuple[int, int]] = set()
    fuse = fuse_devices()
    for root in roots:
        paths = _root_paths(root, out)
        root_real = os.path.realpath(root)
        for path in paths or ():
            entry = _entry(path, fuse, root_real, seen)
            if isinstance(entry, str):
                out.skip(entry)
            elif entry is not None:
                out.files.append(entry)
    out.files = by_priority(out.files)
    return out
