"""What to download: the hub's file list, filtered and checked. Pure functions, no I/O except `free_bytes`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from huggingface_hub.utils._paths import filter_repo_objects  # documented as huggingface_hub.utils.*

from .errors import InsufficientSpace, UnsafeFileName

META_DIR = ".modelcache"
MANIFEST_NAME = "manifest.json"


def manifest_path(directory: Path) -> Path:
    """Where a published folder's manifest lives (here, not in `manifest`: checking for one needs no pydantic)."""
    return directory / META_DIR / MANIFEST_NAME


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None = None  # LFS files on HF, every file on ModelScope
    git_oid: str | None = None  # HF non-LFS files: the git blob sha1

    @property
    def hashed(self) -> bool:
        """False: the hub gives no hash anywhere; only the size can be checked."""
        return self.sha256 is not None or self.git_oid is not None


@dataclass(frozen=True)
class Plan:
    hub: str
    repo: str
    requested_revision: str
    revision: str  # the resolved commit: the folder name
    endpoint: str | None
    files: tuple[RemoteFile, ...]
    fetch_revision: str = ""  # what to ask the hub for when fetching; `revision` when empty

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class _Named(Protocol):
    @property
    def path(self) -> str: ...


Named = TypeVar("Named", bound=_Named)


def filter_files(files: Iterable[Named], allow: Sequence[str] | None,
                 ignore: Sequence[str] | None) -> list[Named]:
    """huggingface_hub's own filter (fnmatch, a trailing "/" means the whole directory), for both hubs."""
    return list(filter_repo_objects(list(files), allow_patterns=list(allow) if allow else None,
                                    ignore_patterns=list(ignore) if ignore else None, key=lambda f: f.path))


def check_safe_path(path: str) -> None:
    """Refuse names that could escape the revision folder or collide with our metadata."""
    problem = None
    if not path:
        problem = "empty name"
    elif "\x00" in path:
        problem = "NUL byte"
    elif "\\" in path:
        problem = "backslash"
    elif path.startswith("/"):
        problem = "absolute path"
    elif any(seg in ("", ".", "..") for seg in path.split("/")):
        problem = "'.', '..' or empty path segment"
    elif path.split("/", maxsplit=1)[0] == META_DIR:
        problem = f"reserved directory {META_DIR}/"
    if problem:
        raise UnsafeFileName(f"refusing file name {path!r}: {problem}")


def check_revision_name(revision: str) -> None:
    """The resolved revision becomes a directory name on the volume."""
    if not revision or "/" in revision or "\\" in revision or "\x00" in revision or revision in (".", ".."):
        raise UnsafeFileName(f"refusing revision folder name {revision!r}")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_space(needed: int, available: int, where: Path) -> None:
    if needed > available:
        raise InsufficientSpace(f"needs {human_bytes(needed)} ({needed} bytes) more on {where}, "
                                f"has {human_bytes(available)} ({available} bytes) free")
