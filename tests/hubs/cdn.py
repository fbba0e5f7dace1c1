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
        sig = hmac.new(self._key, f.sha256.encode(), hashlib.sha256).hexdigest()
        return f"{self.url}/blobs/{f.sha256}?X-Amz-Signature={sig}"

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        sha = parts.path.removeprefix("/blobs/")
        sig = parse_qs(parts.query).get("X-Amz-Signature", [""])[0]
        if h.headers.get("Authorization"):
            self.authorized(h)  # records it
            self.send_json(h, 400, {"error": "Only one auth mechanism allowed"}, method)
            return
        f = self._blobs.get(sha)
        good = hmac.new(self._key, sha.encode(), hashlib.sha256).hexdigest()
        if f is None or not hmac.compare_digest(sig, good):
            self.send_json(h, 403, {"error": "SignatureDoesNotMatch"}, method)
            return
        self.send_file(h, f, method, {"ETag": f'"{f.sha256}"'})
