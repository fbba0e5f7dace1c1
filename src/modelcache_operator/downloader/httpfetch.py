"""One file body over HTTP(S) into place, hashed as it arrives.

Why not huggingface_hub's `http_get`: it reads through httpx2/h11 in 64 KiB pieces and re-chunks them into
fresh 10 MiB bytes objects (three copies and a page-faulting allocation per chunk, all under the GIL); on a
small node that Python work, not the network, bounded the download (issue 4). Here the socket fills one
preallocated buffer per worker (`readinto`, recv outside the GIL), and sha256 and the write take that same
buffer in MiB-sized slices, both outside the GIL too.

The connections (connections.py) keep what the httpx2 client gave us: proxies from the environment
(http(s)_proxy, no_proxy), the same CA trust (httpcore2's context, honouring SSL_CERT_FILE/SSL_CERT_DIR), and
redirects that never carry the token to another host.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable

import httpcore2

from .connections import Connections
from .errors import ChecksumMismatch, DownloadError, NetworkError
from .sequential import SequentialFile

BUFFER = 4 << 20  # per worker; big slices keep hashlib and write() outside the GIL
CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def make_connections() -> Connections:
    """Keep-alive connections with env proxies and the HF client's CA trust; thread-safe to share."""
    return Connections(httpcore2.default_ssl_context())


def download(client: Connections, url: str, out: SequentialFile, *, headers: dict[str, str],
             auth: dict[str, str], on_bytes: Callable[[int], None], timeout: float, what: str) -> None:
    """Fetch bytes `out.position..out.size` of `url` into `out`, which hashes them after its existing prefix.

    A transfer that breaks or ends early raises NetworkError and leaves what arrived on disk, so a retry
    resumes with a Range request.
    """
    start, size = out.position, out.size
    if start == size:
        return  # complete already; a Range request would get a 416
    with client.get(url, headers={**headers, "Range": f"bytes={start}-"} if start else headers, auth=auth,
                    timeout=timeout, what=what) as resp:
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
