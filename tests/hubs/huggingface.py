"""A Hugging Face Hub on 127.0.0.1, enough for the real huggingface_hub client (see tests.hubs for usage).

Endpoints, as the Hub serves them:
  GET  /api/models/{repo}[/revision/{rev}]    model info; `siblings` with size, blobId and lfs{sha256,size}
  GET  /api/models/{repo}/tree/{rev}[/{dir}]  the tree API: [{type, path, size, oid, lfs{oid,size}}]
  HEAD /{repo}/resolve/{rev}/{path}           X-Repo-Commit, ETag, X-Linked-Etag / X-Linked-Size for LFS
  GET  /{repo}/resolve/{rev}/{path}           the body, with Range support
  GET  /api/models/{repo}/xet-read-token/{rev}  Xet CAS URL and token, when `cdn` is a `tests.hubs.xet.XetBridge`
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) like the Hub's.

`MirrorShape` narrows what the hub tells, like minimal mirrors and self-hosted hubs do; `cdn` sends LFS bodies
off to a second host with a 302, like the Hub's CDN (`tests.hubs.cdn.CdnHost`) or its Xet bridge, with the
Xet headers (`tests.hubs.xet.XetBridge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from . import FakeHub, HubFile, Repo
from .xet import XetBridge, xet_hash

if TYPE_CHECKING:
    from .cdn import CdnHost


@dataclass
class MirrorShape:
    listing_sizes: bool = True  # `size` and `lfs` in model info siblings (False: names only)
    tree_api: bool = True  # False: the tree API answers 404, as on mirrors that only proxy /resolve
    head_etags: bool = True  # ETag / X-Linked-Etag on /resolve (False: no hash anywhere but the listing)


class HuggingFaceHub(FakeHub):
    default_branch = "main"

    def __init__(self, *args: Any, cdn: CdnHost | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mirror = MirrorShape()
        self.cdn = cdn

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        if not self.authorized(h):
            bad = bool(h.headers.get("Authorization"))
            self.send_json(h, 401, {"error": "Invalid credentials in Authorization header" if bad else
                                    "Repository not found"}, method,
                           {"X-Error-Message": "Invalid credentials in Authorization header"} if bad else
                           {"X-Error-Code": "RepoNotFound"})
            return
        if path.startswith("/api/models/") and "/xet-read-token/" in path:
            self._xet_read_token(h, method)
        elif path.startswith("/api/models/") and "/tree/" in path:
            self._tree(h, path[len("/api/models/"):], method)
        elif path.startswith("/api/models/"):
            self._model_info(h, path[len("/api/models/"):], method)
        elif "/resolve/" in path:
            self._resolve(h, path, method)
        else:
            self.send_json(h, 404, {"error": "not found"}, method)

    def _repo(self, h: BaseHTTPRequestHandler, repo_id: str, method: str) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self.send_json(h, 404, {"error": f"Repository {repo_id} not found"}, method,
                           {"X-Error-Code": "RepoNotFound"})
        return repo

    def _revision(self, h: BaseHTTPRequestHandler, repo: Repo | None, revision: str, method: str) -> str | None:
        if repo is None:
            return None
        sha = repo.resolve(revision)
        if sha is None:
            self.send_json(h, 404, {"error": f"Invalid rev id: {revision}"}, method,
                           {"X-Error-Code": "RevisionNotFound"})
        return sha

    def _listed_sha256(self, f: HubFile) -> str:
        return "0" * 64 if f.path in self.faults.wrong_sha256 else f.sha256

    def _model_info(self, h: BaseHTTPRequestHandler, rest: str, method: str) -> None:
        parts = rest.split("/")
        repo_id = "/".join(parts[:2])
        revision = unquote(parts[3]) if len(parts) >= 4 and parts[2] == "revision" else self.default_branch
        repo = self._repo(h, repo_id, method)
        sha = self._revision(h, repo, revision, method)
        if repo is None or sha is None:
            return
        siblings: list[dict[str, Any]] = []
        for f in repo.files_at(sha).values():
            sib: dict[str, Any] = {"rfilename": f.path}
            if self.mirror.listing_sizes:
                sib.update(size=f.size, blobId=f.git_oid)
                if f.lfs:
                    sib["lfs"] = {"sha256": self._listed_sha256(f), "size": f.size, "pointerSize": 134}
            siblings.append(sib)
        siblings += [{"rfilename": name, "size": 1, "blobId": "0" * 40} for name in self.faults.unsafe_names]
        self.send_json(h, 200, {"_id": "0" * 24, "id": repo_id, "modelId": repo_id, "sha": sha,
                                "private": self.token is not None, "disabled": False, "gated": False,
                                "tags": [], "downloads": 0, "likes": 0, "siblings": siblings}, method)

    def _tree(self, h: BaseHTTPRequestHandler, rest: str, method: str) -> None:
        head, _, tail = rest.partition("/tree/")
        revision, _, under = tail.partition("/")
        repo = self._repo(h, head, method)
        sha = self._revision(h, repo, unquote(revision), method)
        if repo is None or sha is None:
            return
        if not self.mirror.tree_api:
            self.send_json(h, 404, {"error": "not found"}, method)
            return
        prefix = unquote(under).strip("/")
        entries: list[dict[str, Any]] = []
        for f in repo.files_at(sha).values():
            if prefix and not f.path.startswith(prefix + "/"):
                continue
            entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": self._listed_sha256(f), "size": f.size, "pointerSize": 134}
                if isinstance(self.cdn, XetBridge):
                    entry["xetHash"] = xet_hash(f)
            entries.append(entry)
        entries += [{"type": "file", "oid": "0" * 40, "size": 1, "path": n} for n in self.faults.unsafe_names]
        self.send_json(h, 200, entries, method)

    def _xet_read_token(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if not isinstance(self.cdn, XetBridge):
            self.send_json(h, 404, {"error": "not a Xet-backed repo"}, method)
            return
        token = self.cdn.read_token_headers()
        self.send_json(h, 200, {"casUrl": token["X-Xet-Cas-Url"], "accessToken": token["X-Xet-Access-Token"],
                                "exp": int(token["X-Xet-Token-Expiration"])}, method, token)

    def _resolve(self, h: BaseHTTPRequestHandler, path: str, method: str) -> None:
        head, _, file_path = path.lstrip("/").partition("/resolve/")
        revision, _, file_path = file_path.partition("/")
        revision, file_path = unquote(revision), unquote(file_path)
        repo = self._repo(h, head, method)
        sha = self._revision(h, repo, revision, method)
        if repo is None or sha is None:
            return
        f = repo.files_at(sha).get(file_path)
        if f is None:
            self.send_json(h, 404, {"error": "entry not found"}, method,
                           {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
            return
        headers = {"X-Repo-Commit": sha}
        if self.mirror.head_etags:
            headers["ETag"] = f'"{f.sha256 if f.lfs else f.git_oid}"'
            if f.lfs:
                headers["X-Linked-Etag"] = f'"{f.sha256}"'
        if f.lfs:
            headers["X-Linked-Size"] = str(f.size)
        if f.lfs and self.cdn is not None:
            # The Hub answers LFS files with a 302 to a signed CDN URL that carries its own authorization.
            headers.update(self.cdn.redirect_headers(self.url, head, revision, f))
            headers["Content-Length"] = "0"
            h.send_response(302)
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            return
        self.send_file(h, f, method, headers)
