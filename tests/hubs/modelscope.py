"""A ModelScope hub on 127.0.0.1, enough for the real modelscope / modelscope_hub client (see tests.hubs).

Endpoints of the legacy /api/v1 surface the client uses for downloads:
  GET /api/v1/models/{repo}/revisions                      RevisionMap{Branches,Tags}[{Revision,CommitId,...}]
  GET /api/v1/models/{repo}/repo/files?Revision=&Recursive= Files[{Path,Name,Size,Sha256,Type,Revision,IsLFS}]
  GET /api/v1/models/{repo}/repo?Revision=&FilePath=        the body, with Range support
  GET /api/v1/repos/internalAccelerationInfo                404 (not inside Alibaba Cloud)
Auth: `Authorization: Bearer <token>` or cookie `m_session_id=<token>`, as the client sends both.
"""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import FakeHub, Repo


def envelope(data: Any, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"Code": code, "Data": data, "Message": message, "RequestId": "fake", "Success": code == 200}


class ModelScopeHub(FakeHub):
    default_branch = "master"

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        if not path.startswith("/api/v1/models/"):
            self.send_json(h, 404, envelope(None, 404, "not found"), method)
            return
        if not self.authorized(h):
            self.send_json(h, 401, envelope(None, 401, "Unauthorized: invalid or missing token"), method)
            return
        segs = path[len("/api/v1/models/"):].split("/")
        repo = self.repos.get("/".join(segs[:2]))
        if repo is None:
            self.send_json(h, 404, envelope(None, 404, "model not found"), method)
            return
        rest = "/".join(segs[2:])
        revision = query.get("Revision", [self.default_branch])[0]
        if rest == "revisions":
            self._revisions(h, repo, method)
            return
        sha = repo.resolve(revision)
        if sha is None:
            self.send_json(h, 404, envelope(None, 404, f"revision {revision} not found"), method)
        elif rest == "repo/files":
            self._files(h, repo, sha, method)
        elif rest == "repo":
            f = repo.files.get(query.get("FilePath", [""])[0])
            if f is None:
                self.send_json(h, 404, envelope(None, 404, "file not found"), method)
            else:
                self.send_file(h, f, method, {})
        else:
            self.send_json(h, 404, envelope(None, 404, "not found"), method)

    def _revisions(self, h: BaseHTTPRequestHandler, repo: Repo, method: str) -> None:
        now = int(time.time())

        def item(name: str, sha: str) -> dict[str, Any]:
            return {"Revision": name, "CommitId": sha, "CreatedAt": now, "CreatedBy": "fake", "Message": ""}

        self.send_json(h, 200, envelope({"RevisionMap": {
            "Branches": [item(n, s) for n, s in repo.branches.items()],
            "Tags": [item(n, s) for n, s in repo.tags.items()]}}), method)

    def _files(self, h: BaseHTTPRequestHandler, repo: Repo, sha: str, method: str) -> None:
        files: list[dict[str, Any]] = []
        for f in repo.files.values():
            sha256 = "0" * 64 if f.path in self.faults.wrong_sha256 else f.sha256
            files.append({"Name": f.path.rsplit("/", 1)[-1], "Path": f.path, "Size": f.size, "Sha256": sha256,
                          "Type": "blob", "Revision": sha, "IsLFS": f.lfs, "CommittedDate": 0})
        files += [{"Name": n, "Path": n, "Size": 1, "Sha256": "0" * 64, "Type": "blob", "Revision": sha}
                  for n in self.faults.unsafe_names]
        self.send_json(h, 200, envelope({"Files": files, "LatestCommitter": {"Id": sha}}), method)
