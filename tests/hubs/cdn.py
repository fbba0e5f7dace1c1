"""A second loopback host that serves LFS bodies behind signed URLs, like the Hub's CDN or Xet bridge.

    cdn = CdnHost(host="127.0.0.2").start()
    hub = HuggingFaceHub(token=TOKEN, cdn=cdn)        # LFS files on /resolve answer 302 -> cdn.signed_url(f)
    cdn.auth_headers_seen                             # must stay empty: the hub token never goes there

Like S3 presigned URLs, a request that also carries an Authorization header is refused (400): two
authorization mechanisms. The signature is checked, so only URLs the hub handed out work.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import FakeHub, HubFile


class CdnHost(FakeHub):
    def __init__(self, host: str = "127.0.0.2", **kwargs: Any) -> None:
        super().__init__(host=host, **kwargs)
        self._key = secrets.token_bytes(16)
        self._blobs: dict[str, HubFile] = {}

    def signed_url(self, f: HubFile) -> str:
        self._blobs[f.sha256] = f
        return f"{self.url}/blobs/{f.sha256}?X-Amz-Signature={self._sign(f.sha256)}"

    def redirect_headers(self, hub_url: str, repo_id: str, revision: str, f: HubFile) -> dict[str, str]:
        """What the hub adds to its 302 for `f` (a Xet bridge adds its own)."""
        return {"Location": self.signed_url(f)}

    def _sign(self, key: str) -> str:
        return hmac.new(self._key, key.encode(), hashlib.sha256).hexdigest()

    def _blob_and_signature(self, path: str, query: dict[str, list[str]]) -> tuple[str, str]:
        return path.removeprefix("/blobs/"), query.get("X-Amz-Signature", [""])[0]

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        sha, sig = self._blob_and_signature(parts.path, parse_qs(parts.query))
        if h.headers.get("Authorization"):
            self.authorized(h)  # records it
            self.send_json(h, 400, {"error": "Only one auth mechanism allowed"}, method)
            return
        f = self._blobs.get(sha)
        if f is None or not hmac.compare_digest(sig, self._sign(sha)):
            self.send_json(h, 403, {"error": "SignatureDoesNotMatch"}, method)
            return
        self.send_file(h, f, method, {"ETag": f'"{f.sha256}"'})
