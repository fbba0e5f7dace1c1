"""A second loopback host answering like the Hub's Xet bridge, for Xet-backed repos.

    bridge = XetBridge(host="127.0.0.2").start()
    hub = HuggingFaceHub(token=TOKEN, cdn=bridge)     # LFS files on /resolve: 302 to the bridge, Xet headers

What the Hub sends for a Xet-backed file, as huggingface_hub reads it (`file_download.get_hf_file_metadata`,
`utils._xet.parse_xet_file_data_from_response`): a 302 whose `Location` is a signed bridge URL
(`/xet-bridge-us/<repo>/<xet hash>?X-Xet-Signed-Range=...&Expires=...&Signature=...`), `X-Xet-Hash`, and a
`Link` header with `rel="xet-auth"` (the hub's `/api/models/<repo>/xet-read-token/<rev>`, which answers
`X-Xet-Cas-Url`, `X-Xet-Access-Token`, `X-Xet-Token-Expiration`) and `rel="xet-reconstruction-info"`.
The bridge serves the plain bytes with Range, refusing a second authorization like the CDN.

What it does not do: the CAS protocol hf_xet speaks (`/reconstruction/<hash>` answering terms of xorbs, in
Xet's chunked, compressed, merkle-hashed format). Faking that honestly means reimplementing Xet storage, so
`/reconstruction/` answers 501 and is counted: a client that took the hf_xet path fails here, loudly.
The Xet hash is a stand-in identifier (Xet's real one is a merkle hash over content-defined chunks).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import quote

from . import HubFile
from .cdn import CdnHost

BRIDGE_PREFIX = "/xet-bridge-us/"


def xet_hash(f: HubFile) -> str:
    return hashlib.sha256(b"xet:" + f.sha256.encode()).hexdigest()


class XetBridge(CdnHost):
    def __init__(self, host: str = "127.0.0.2", **kwargs: Any) -> None:
        super().__init__(host=host, **kwargs)
        self.reconstruction_requests: list[str] = []

    def signed_url(self, f: HubFile) -> str:
        h = xet_hash(f)
        self._blobs[h] = f
        return (f"{self.url}{BRIDGE_PREFIX}{hashlib.sha256(b'repo').hexdigest()[:16]}/{h}"
                f"?X-Xet-Signed-Range={quote(f'bytes=0-{f.size - 1}')}&Expires={int(time.time()) + 3600}"
                f"&Signature={self._sign(h)}")

    def redirect_headers(self, hub_url: str, repo_id: str, revision: str, f: HubFile) -> dict[str, str]:
        h = xet_hash(f)
        return {"Location": self.signed_url(f), "X-Xet-Hash": h,
                "Link": f'<{hub_url}/api/models/{repo_id}/xet-read-token/{revision}>; rel="xet-auth", '
                        f'<{self.url}/reconstruction/{h}>; rel="xet-reconstruction-info"'}

    def read_token_headers(self) -> dict[str, str]:
        """The hub's answer to the `xet-auth` link: where the CAS is and a short-lived token for it."""
        return {"X-Xet-Cas-Url": self.url, "X-Xet-Access-Token": secrets.token_urlsafe(16),
                "X-Xet-Token-Expiration": str(int(time.time()) + 3600)}

    def _blob_and_signature(self, path: str, query: dict[str, list[str]]) -> tuple[str, str]:
        return path.rsplit("/", 1)[-1], query.get("Signature", [""])[0]

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if h.path.startswith("/reconstruction/"):
            self.reconstruction_requests.append(h.path)
            self.send_json(h, 501, {"error": "the CAS protocol is not implemented by this test bridge"}, method)
            return
        super().handle(h, method)
