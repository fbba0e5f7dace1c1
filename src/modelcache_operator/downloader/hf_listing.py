"""What a Hugging Face-protocol hub tells about each file, from whichever place tells it.

Minimal mirrors and self-hosted hubs list file names without sizes or hashes. The protocol carries them in
three places, asked in this order and only for what is still missing:
1. the model info listing (`siblings[].size`, `.blobId`, `.lfs.sha256`);
2. the tree API (`/api/models/{repo}/tree/{rev}?recursive=1`: `size`, `oid`, `lfs.oid`);
3. a HEAD per file on /resolve (`X-Linked-Size` / `Content-Length`, `X-Linked-Etag` / `ETag`).
A file no place gives a hash for is size-checked only and marked unverified in the manifest.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from .errors import DownloadError, NotFound
from .plan import RemoteFile

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_OID = re.compile(r"^[0-9a-f]{40}$")
HEAD_WORKERS = 8


@dataclass(frozen=True)
class Listed:
    """One file as a listing gave it; None where the listing said nothing."""

    path: str
    size: int | None = None
    sha256: str | None = None
    git_oid: str | None = None

    @property
    def complete(self) -> bool:
        return self.size is not None and (self.sha256 is not None or self.git_oid is not None)

    def merged(self, other: Listed) -> Listed:
        """Fill what this one lacks from `other` (same path); what we have wins."""
        return replace(self, size=self.size if self.size is not None else other.size,
                       sha256=self.sha256 or other.sha256,
                       git_oid=self.git_oid or (None if self.sha256 else other.git_oid))


def hashes_from_etag(etag: str | None) -> tuple[str | None, str | None]:
    """(sha256, git blob oid) an ETag can stand for: the Hub's LFS ETag is the sha256, a regular file's
    its git blob oid. Any other shape (a CDN's md5, nginx's mtime-size) tells nothing we can check."""
    value = (etag or "").strip().removeprefix("W/").strip('"').lower()
    if _SHA256.match(value):
        return value, None
    if _GIT_OID.match(value):
        return None, value
    return None, None


def complete_listing(listed: list[Listed], tree: Callable[[], Iterable[Listed]],
                     head: Callable[[str], Listed]) -> list[RemoteFile]:
    """Fill sizes and hashes from the tree API, then per-file HEADs; raise NotFound if a size stays unknown."""
    if not all(f.complete for f in listed):
        by_path = {f.path: f for f in tree_or_nothing(tree)}
        listed = [f.merged(by_path[f.path]) if f.path in by_path else f for f in listed]
    missing = [f for f in listed if not f.complete]
    if missing:
        log.info("The listing lacks sizes or hashes of %d file(s); asking /resolve for each", len(missing))
        with cf.ThreadPoolExecutor(HEAD_WORKERS, thread_name_prefix="head") as pool:
            heads = dict(zip((f.path for f in missing), pool.map(head, (f.path for f in missing)), strict=True))
        listed = [f.merged(heads[f.path]) if f.path in heads else f for f in listed]
    files = []
    for f in listed:
        if f.size is None:
            raise NotFound(f"{f.path}: the hub tells no size for it (listing, tree API and HEAD)")
        files.append(RemoteFile(path=f.path, size=f.size, sha256=f.sha256, git_oid=f.git_oid))
    unhashed = [f.path for f in files if not f.hashed]
    if unhashed:
        log.warning("The hub gives no hash for %d file(s) (%s); they are checked by size only and marked "
                    "unverified in the manifest", len(unhashed), ", ".join(unhashed[:5]))
    return files


def tree_or_nothing(tree: Callable[[], Iterable[Listed]]) -> list[Listed]:
    """The tree API's entries, or none where the hub does not serve it (a 404, 405 or the like from a mirror)."""
    try:
        return list(tree())
    except DownloadError as e:
        if not isinstance(e, NotFound) and type(e) is not DownloadError:
            raise  # unauthorized or network trouble: the same would hit the download
        log.info("No tree API on this hub (%s); falling back to a HEAD per file", e)
        return []
