"""The two hubs behind one small interface: resolve + list (`plan`) and fetch one file into its final place.

Hugging Face: listing through `HfApi.model_info(files_metadata=True)`; each file's location and size through
the client's public `get_hf_file_metadata`, its body through our own streaming GET (`httpfetch`), written
straight into `<root>/<sha>/<path>`. We do not use `hf_hub_download(local_dir=...)` because huggingface_hub
2.x downloads to a process-unique temp file that it deletes on failure and never resumes after a kill, then
renames it into place (a copy on FUSE). With our own file handle, a killed download resumes with a Range
request where it stopped, and the bytes are hashed as they arrive.

ModelScope: revisions and listing through the official `modelscope` / `modelscope_hub` client, each body
through the same streaming GET into its final place (the client's own download writes `<file>.incomplete` and
renames it, which object stores turn into a full, non-atomic copy).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub import errors as hf
from huggingface_hub.hf_api import BlobLfsInfo, RepoFile
from huggingface_hub.utils._headers import build_hf_headers

from .errors import (
    ChecksumMismatch,
    DownloadError,
    InvalidArgument,
    NetworkError,
    NotFound,
    Unauthorized,
    status_error,
)
from .hf_listing import Listed, complete_listing, hashes_from_etag
from .httpfetch import make_connections
from .plan import Plan, RemoteFile, check_safe_path, filter_files
from .ranged import fetch_body
from .sequential import SequentialFile

OnBytes = Callable[[int], None]
log = logging.getLogger(__name__)
HEX_COMMIT = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
USER_AGENT = "modelcache-operator-downloader"
MODELSCOPE_READ_TIMEOUT = 60.0  # per socket read, like the client's; a stalled part is retried


class Source(Protocol):
    def plan(self, requested_revision: str, allow: list[str] | None, ignore: list[str] | None) -> Plan: ...

    def partial_bytes(self, dest_dir: Path, f: RemoteFile) -> int:
        """Bytes of an unfinished download of `f` already on disk."""
        ...

    def fetch(self, plan: Plan, f: RemoteFile, dest_dir: Path, on_bytes: OnBytes) -> str | None:
        """Download `f` to `dest_dir/f.path`; return its sha256 when it was hashed on the way, else None."""
        ...

    def discard(self, dest_dir: Path, f: RemoteFile) -> None:
        """Remove `f` and any partial download of it."""
        ...


class _WrittenInPlace:
    """Each file is written straight into its final place (`SequentialFile`): an unfinished download is the
    file itself, continued by appending, never a temp file renamed into place (a full copy on object stores)."""

    def partial_bytes(self, dest_dir: Path, f: RemoteFile) -> int:
        p = dest_dir / f.path
        return min(p.stat().st_size, f.size) if p.is_file() else 0

    def discard(self, dest_dir: Path, f: RemoteFile) -> None:
        (dest_dir / f.path).unlink(missing_ok=True)


# ----- Hugging Face -----

class HuggingFaceSource(_WrittenInPlace):
    def __init__(self, repo: str, endpoint: str | None, token: str | None, connections_per_file: int = 1) -> None:
        self.repo = repo
        self._connections = connections_per_file
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._token = token
        self._client = make_connections()
        # The client's telemetry fetches a registry from huggingface.co itself, whatever the endpoint: a
        # request to the public hub from a Job told to use a mirror (behind a proxy, a refused CONNECT).
        constants.HF_HUB_DISABLE_TELEMETRY = True

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except DownloadError:
            raise
        except (hf.RevisionNotFoundError, hf.RemoteEntryNotFoundError) as e:
            raise NotFound(f"{what}: {type(e).__name__} (HTTP {e.response.status_code})") from None
        except hf.HfHubHTTPError as e:
            # huggingface_hub reports a 401 on a repo as RepositoryNotFoundError; the status tells them apart.
            raise status_error(e.response.status_code, what) from None
        except (httpx2.TransportError, httpx2.StreamError) as e:
            raise NetworkError(f"{what}: {type(e).__name__}: {e}") from None

    def plan(self, requested_revision: str, allow: list[str] | None, ignore: list[str] | None) -> Plan:
        with self._errors(f"resolving {self.repo}@{requested_revision}"):
            api = HfApi(endpoint=self.endpoint, token=self._token or False)
            info = api.model_info(self.repo, revision=requested_revision, files_metadata=True)
        if not info.sha:
            raise NotFound(f"{self.repo}@{requested_revision}: the hub returned no commit sha")
        revision = info.sha
        listed = filter_files([_listed(s.rfilename, s.size, s.blob_id, s.lfs) for s in info.siblings or []],
                              allow, ignore)
        for f in listed:
            check_safe_path(f.path)  # before a HEAD goes out with that name in its URL

        def tree() -> list[Listed]:
            with self._errors(f"listing the tree of {self.repo}@{revision}"):
                return [_listed(e.path, e.size, e.blob_id, e.lfs) for e in
                        api.list_repo_tree(self.repo, recursive=True, revision=revision)
                        if isinstance(e, RepoFile)]

        def head(path: str) -> Listed:
            with self._errors(f"HEAD {path}"):
                meta = get_hf_file_metadata(hf_hub_url(self.repo, path, revision=revision, endpoint=self.endpoint),
                                            token=self._token or False, endpoint=self.endpoint,
                                            retry_on_errors=True)
            sha256, git_oid = hashes_from_etag(meta.etag)
            return Listed(path, meta.size, sha256, git_oid)

        return Plan(hub="huggingface", repo=self.repo, requested_revision=requested_revision,
                    revision=revision, endpoint=self.endpoint, files=tuple(complete_listing(listed, tree, head)))

    def fetch(self, plan: Plan, f: RemoteFile, dest_dir: Path, on_bytes: OnBytes) -> str | None:
        what = f"downloading {f.path}"
        dest = dest_dir / f.path
        with self._errors(what):
            url = hf_hub_url(plan.repo, f.path, revision=plan.revision, endpoint=self.endpoint)
            meta = get_hf_file_metadata(url, token=self._token or False, endpoint=self.endpoint,
                                        retry_on_errors=True)
            if meta.size is not None and meta.size != f.size:
                raise ChecksumMismatch(f"{f.path}: the hub serves {meta.size} bytes, listing says {f.size}")
            # Never send the token to another host (an LFS CDN with a signed URL does not need it).
            same_host = urlparse(meta.location).netloc == urlparse(url).netloc
            headers = build_hf_headers(token=(self._token or False) if same_host else False)
        auth = {"Authorization": a} if (a := headers.pop("authorization", None)) else {}
        with SequentialFile(dest, f.size, on_bytes) as out:
            fetch_body(self._client, meta.location, out, headers=headers, auth=auth,
                       connections=self._connections, on_bytes=on_bytes, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                       what=what)
        return out.digest.hexdigest()


def _listed(path: str, size: int | None, blob_id: str | None, lfs: BlobLfsInfo | None) -> Listed:
    """A listing entry; an LFS file's blob id is its pointer's, so only the LFS sha256 checks its content."""
    if lfs is not None:
        return Listed(path, lfs.size if lfs.size is not None else size, lfs.sha256 or None, None)
    return Listed(path, size, None, blob_id or None)


# ----- ModelScope -----

def _modelscope_env() -> None:
    """Settings the modelscope client reads at import time."""
    defaults = {
        "MODELSCOPE_CACHE": os.path.join(tempfile.gettempdir(), "modelscope-cache"),
        "MODELSCOPE_HOME": os.path.join(tempfile.gettempdir(), "modelscope-home"),
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)


class ModelScopeSource(_WrittenInPlace):
    def __init__(self, repo: str, endpoint: str | None, token: str | None, connections_per_file: int = 1) -> None:
        _modelscope_env()
        # Imported late: the client reads its settings from the environment at import time.
        from modelscope.hub.api import HubApi  # noqa: PLC0415
        from modelscope_hub import HubApi as FileApi  # noqa: PLC0415

        self.repo = repo
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._api = HubApi(endpoint=self.endpoint, token=token)  # revision resolution (legacy surface)
        self._files = FileApi(endpoint=self.endpoint, token=token)  # listing and download URLs
        self._connections = connections_per_file
        self._client = make_connections()
        # What the client sends with a download: its legacy endpoints take the cookie, newer ones the Bearer.
        self._auth = {"Authorization": f"Bearer {token}", "Cookie": f"m_session_id={token}"} if token else {}

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        import requests  # noqa: PLC0415  (only this hub's client raises it; a slow import)
        from modelscope_hub import errors as ms  # noqa: PLC0415  (after _modelscope_env)

        try:
            yield
        except DownloadError:
            raise
        except (ms.AuthenticationError, ms.PermissionDeniedError) as e:
            raise Unauthorized(f"{what}: HTTP {e.status_code}, the token is missing, wrong or lacks access") \
                from None
        except ms.NotExistError as e:
            raise NotFound(f"{what}: HTTP {e.status_code or 404}") from None
        except (ms.NetworkError, ms.ServerError, ms.RateLimitError, requests.RequestException) as e:
            raise NetworkError(f"{what}: {type(e).__name__}") from None
        except ms.APIError as e:
            raise status_error(e.status_code, what) from None
        except ms.HubError as e:
            raise DownloadError(f"{what}: {type(e).__name__}") from None

    def _resolve(self, requested: str) -> tuple[str, str]:
        """(revision to list and fetch, commit id for the folder name)."""
        from modelscope_hub import errors as ms  # noqa: PLC0415  (after _modelscope_env)

        try:
            detail: dict[str, Any] = self._api.get_valid_revision_detail(self.repo, revision=requested)
        except ms.NotExistError:
            if HEX_COMMIT.match(requested):
                return requested, requested  # a commit id is not among branches and tags
            raise
        commit = detail.get("CommitId") or detail.get("CommitID") or detail.get("Sha")
        name = str(detail.get("Revision") or requested)
        if isinstance(commit, str) and HEX_COMMIT.match(commit):
            return name, commit
        raise NotFound(f"{self.repo}@{requested}: the hub did not say which commit {name} points to")

    def plan(self, requested_revision: str, allow: list[str] | None, ignore: list[str] | None) -> Plan:
        with self._errors(f"resolving {self.repo}@{requested_revision}"):
            name, commit = self._resolve(requested_revision)
            listing = self._files.list_repo_files(self.repo, "model", revision=name, recursive=True)
        files = [RemoteFile(path=f.path, size=int(f.size), sha256=(f.sha256 or None))
                 for f in listing if not f.is_dir]
        return Plan(hub="modelscope", repo=self.repo, requested_revision=requested_revision,
                    revision=commit, endpoint=self.endpoint, files=tuple(filter_files(files, allow, ignore)),
                    fetch_revision=name)

    def fetch(self, plan: Plan, f: RemoteFile, dest_dir: Path, on_bytes: OnBytes) -> str | None:
        """Our own GET into the final file, not the client's `download_file`: that one writes `<file>.incomplete`
        and renames it into place (a full copy, and a non-atomic one, on ossfs), and reopens it to resume."""
        what = f"downloading {f.path}"
        url = self._files.legacy.get_download_url(self.repo, "model", f.path, plan.fetch_revision or plan.revision)
        with SequentialFile(dest_dir / f.path, f.size, on_bytes) as out:
            fetch_body(self._client, url, out, headers={"User-Agent": USER_AGENT}, auth=self._auth,
                       connections=self._connections, on_bytes=on_bytes, timeout=MODELSCOPE_READ_TIMEOUT, what=what)
        return out.digest.hexdigest()


def make_source(hub: str, repo: str, endpoint: str | None, token: str | None,
                connections_per_file: int = 1) -> Source:
    if hub == "huggingface":
        return HuggingFaceSource(repo, endpoint, token, connections_per_file)
    if hub == "modelscope":
        return ModelScopeSource(repo, endpoint, token, connections_per_file)
    raise InvalidArgument(f"unknown hub {hub!r}; expected huggingface or modelscope")
