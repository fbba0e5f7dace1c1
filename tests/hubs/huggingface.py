"""A Hugging Face Hub on 127.0.0.1, enough for the real huggingface_hub client (see tests.hubs for usage).

Endpoints, as the Hub serves them:
  GET  /api/models/{repo}[/revision/{rev}]   model info; `siblings` with size, blobId and lfs{sha256,size}
  HEAD /{repo}/resolve/{rev}/{path}           X-Repo-Commit, ETag, X-Linked-Etag / X-Linked-Size for LFS
  GET  /{repo}/resolve/{rev}/{path}           the body, with Range support
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) like the Hub's.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from . import FakeHub, Repo


class HuggingFaceHub(FakeHub):
    default_branch = "main"

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        if not self.authorized(h):
            bad = bool(h.headers.get("Authorization"))
            self.send_json(h, 401, {"error": "Invalid credentials in Authorization header" if bad else
                                    "Repository not found"}, method,
                           {"X-Error-Message": "Invalid credentials in Authorization header"} if bad else
                           {"X-Error-Code": "RepoNotFound"})
            return
        if path.startswith("/api/models/"):
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

    def _model_info(self, h: BaseHTTPRequestHandler, rest: str, method: str) -> None:
        parts = rest.split("/")
        repo_id = "/".join(parts[:2])
        revision = unquote(parts[3]) if len(parts) >= 4 and parts[2] == "revision" else self.default_branch
        repo = self._repo(h, repo_id, method)
        if repo is None:
            return
        sha = repo.resolve(revision)
        if sha is None:
            self.send_json(h, 404, {"error": f"Invalid rev id: {revision}"}, method,
                           {"X-Error-Code": "RevisionNotFound"})
            return
        siblings: list[dict[str, Any]] = []
        for f in repo.files.values():
            sib: dict[str, Any] = {"rfilename": f.path, "size": f.size, "blobId": f.git_oid}
            if f.lfs:
                sha256 = "0" * 64 if f.path in self.faults.wrong_sha256 else f.sha256
                sib["lfs"] = {"sha256": sha256, "size": f.size, "pointerSize": 134}
            siblings.append(sib)
        siblings += [{"rfilename": name, "size": 1, "blobId": "0" * 40} for name in self.faults.unsafe_names]
        self.send_json(h, 200, {"_id": "0" * 24, "id": repo_id, "modelId": repo_id, "sha": sha,
                                "private": self.token is not None, "disabled": False, "gated": False,
                                "tags": [], "downloads": 0, "likes": 0, "siblings": siblings}, method)

    def _resolve(self, h: BaseHTTPRequestHandler, path: str, method: str) -> None:
        head, _, file_path = path.lstrip("/").partition("/resolve/")
        revision, _, file_path = file_path.partition("/")
        revision, file_path = unquote(revision), unquote(file_path)
        repo = self._repo(h, head, method)
        if repo is None:
            return
        sha = repo.resolve(revision)
        if sha is None:
            self.send_json(h, 404, {"error": "revision not found"}, method,
                           {"X-Error-Code": "RevisionNotFound"})
            return
        f = repo.files.get(file_path)
        if f is None:
            self.send_json(h, 404, {"error": "entry not found"}, method,
                           {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
            return
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f.sha256 if f.lfs else f.git_oid}"'}
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(f.size)
        self.send_file(h, f, method, headers)
