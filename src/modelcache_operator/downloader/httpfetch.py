"""One file body over HTTP(S) into place, hashed as it arrives.

Why not huggingface_hub's `http_get`: it reads through httpx2/h11 in 64 KiB pieces and re-chunks them into
fresh 10 MiB bytes objects (three copies and a page-faulting allocation per chunk, all under the GIL); on a
small node that Python work, not the network, bounded the download (issue 4). Here the socket fills one
preallocated buffer per worker (`readinto`, recv outside the GIL), and sha256 and the write take that same
buffer in MiB-sized slices, both outside the GIL too.

urllib keeps what the httpx2 client gave us: proxies from the environment (http(s)_proxy, no_proxy), the
same CA trust (httpcore2's context, honouring SSL_CERT_FILE/SSL_CERT_DIR), and redirects.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlparse

import httpcore2

from .errors import ChecksumMismatch, DownloadError, NetworkError, status_error
from .sequential import SequentialFile

BUFFER = 4 << 20  # per worker; big slices keep hashlib and write() outside the GIL
CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def make_opener() -> urllib.request.OpenerDirector:
    """An opener with env proxies, the HF client's CA trust, and redirects; thread-safe to share."""
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=httpcore2.default_ssl_context()))


def download(opener: urllib.request.OpenerDirector, url: str, out: SequentialFile, *, headers: dict[str, str],
             token_header: str | None, on_bytes: Callable[[int], None], timeout: float, what: str) -> None:
    """Fetch bytes `out.position..out.size` of `url` into `out`, which hashes them after its existing prefix.

    A transfer that breaks or ends early raises NetworkError and leaves what arrived on disk, so a retry
    resumes with a Range request.
    """
    start, size = out.position, out.size
    if start == size:
        return  # complete already; a Range request would get a 416
    if urlparse(url).scheme not in ("http", "https"):
        raise DownloadError(f"{what}: refusing to fetch {url!r}: not http(s)")  # e.g. a hub pointing at file:
    req = urllib.request.Request(url, headers={**headers, "Accept-Encoding": "identity"})  # noqa: S310  (checked)
    if token_header:
        # Unredirected: urllib drops it on any redirect, so the token never follows a hop to another host.
        req.add_unredirected_header("Authorization", token_header)
    if start:
        req.add_header("Range", f"bytes={start}-")
    try:
        resp = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        raise status_error(e.code, what) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise NetworkError(f"{what}: {type(e).__name__}: {e}") from None
    with resp:
        if start and resp.status == 200:
            # The server ignored Range and sends the whole file: start over, hash included.
            out.restart()
            start = 0
        elif start:
            m = CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
            if resp.status != 206 or m is None or int(m.group(1)) != start:
                raise NetworkError(f"{what}: asked for bytes {start}-, got HTTP {resp.status} "
                                   f"{resp.headers.get('Content-Range')}")
        elif resp.status != 200:
            raise DownloadError(f"{what}: HTTP {resp.status}")
        if resp.headers.get("Content-Encoding", "identity") != "identity":
            raise DownloadError(f"{what}: the server sent Content-Encoding {resp.headers['Content-Encoding']}")
        if resp.length is not None and start + resp.length != size:
            raise ChecksumMismatch(f"{what}: the hub serves {start + resp.length} bytes, listing says {size}")
        buf = memoryview(bytearray(BUFFER))
        done = start
        while done < size:
            try:
                n = resp.readinto(buf[:min(BUFFER, size - done)])  # never past `size`, even if chunked
            except (OSError, http.client.HTTPException) as e:
                raise NetworkError(f"{what}: {type(e).__name__} after {done} of {size} bytes") from None
            if not n:
                break
            out.write(buf[:n])
            on_bytes(n)
            done += n
    if done != size:
        raise NetworkError(f"{what}: transfer ended early, {done} of {size} bytes")
