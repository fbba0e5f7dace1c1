"""HTTP/1.1 connections kept alive across the many GETs of one download.

A 100 GB shard is ~12,800 ranged parts of 8 MiB, and a model is often hundreds of files. urllib opens a new
connection for each request: against a real CDN a TCP and TLS handshake (two or three round trips) per 8 MiB
part, time in which that connection's per-connection cap goes unused. Here every request takes an idle
connection to its host from a shared pool, or opens one, and gives it back once its body is read to the end.

Redirects are followed here (at most 10 hops, as urllib), and the `auth` headers go to the first host only:
never along a redirect, so a token never reaches a CDN or the Xet bridge. A host reached through a proxy
(http(s)_proxy, minus no_proxy) keeps going through urllib, which carries the proxy handling.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

from .errors import DownloadError, NetworkError, status_error

REDIRECTS = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 10
IDLE_PER_HOST = 32  # more than any download keeps busy at once: 8 range workers x 2 big files, plus the file pool

Origin = tuple[str, str]  # (scheme, host[:port])


class Connections:
    """A pool of idle keep-alive connections per origin, shared by all threads; and the requests over it."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
        self._proxies = urllib.request.getproxies()
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = defaultdict(list)
        self._lock = threading.Lock()
        self.opened = 0  # connections opened so far, for tests and benchmarks

    @contextlib.contextmanager
    def get(self, url: str, *, headers: dict[str, str], auth: dict[str, str], timeout: float,
            what: str) -> Iterator[http.client.HTTPResponse]:
        """The response to a GET of `url`, after redirects; its errors mapped to ours. The body is the caller's
        to read: a connection read to the end goes back to the pool, any other is closed."""
        headers = {**headers, "Accept-Encoding": "identity"}
        for _ in range(MAX_REDIRECTS + 1):
            origin = _origin(url, what)
            if self._proxied(origin):
                with self._through_urllib(url, headers, auth, timeout, what) as resp:
                    yield resp
                return
            conn, resp = self._request(origin, url, {**headers, **auth}, timeout, what)
            location = resp.headers.get("Location") if resp.status in REDIRECTS else None
            if location is None and resp.status >= 400:
                self._finish(origin, conn, resp, drain=True)
                raise status_error(resp.status, what)
            if location is None:
                try:
                    yield resp
                finally:
                    self._finish(origin, conn, resp, drain=False)
                return
            self._finish(origin, conn, resp, drain=True)
            url, auth = urljoin(url, location), {}  # urllib drops unredirected headers on every hop too
        raise NetworkError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def close(self) -> None:
        with self._lock:
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def _request(self, origin: Origin, url: str, headers: dict[str, str], timeout: float,
                 what: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for fresh in (False, True):
            conn, reused = self._take(origin, timeout, fresh)
            try:
                conn.request("GET", target, headers=headers)
                return conn, conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if not reused:
                    raise NetworkError(f"{what}: {type(e).__name__}: {e}") from None
                # The server closed an idle connection as we reused it: one fresh try, as HTTP clients do.
        raise AssertionError("unreachable: the fresh attempt returns or raises")

    def _take(self, origin: Origin, timeout: float, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        if not fresh:
            with self._lock:
                idle = self._idle[origin]
                while idle:
                    conn = idle.pop()
                    if conn.sock is None:  # closed after a `Connection: close` response
                        continue
                    conn.timeout = timeout
                    conn.sock.settimeout(timeout)
                    return conn, True
        scheme, netloc = origin
        with self._lock:
            self.opened += 1
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=timeout, context=self._context), False
        return http.client.HTTPConnection(netloc, timeout=timeout), False

    def _finish(self, origin: Origin, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                drain: bool) -> None:
        """Back to the pool if its response was read to the end (a short error or redirect body is read here)."""
        if drain and resp.length is not None and resp.length <= 64 << 10:
            with contextlib.suppress(OSError, http.client.HTTPException):
                resp.read()
        reusable = resp.isclosed()
        resp.close()
        if not reusable:
            conn.close()
            return
        with self._lock:
            if len(self._idle[origin]) < IDLE_PER_HOST:
                self._idle[origin].append(conn)
                return
        conn.close()

    def _proxied(self, origin: Origin) -> bool:
        scheme, netloc = origin
        return scheme in self._proxies and not urllib.request.proxy_bypass(netloc)

    @contextlib.contextmanager
    def _through_urllib(self, url: str, headers: dict[str, str], auth: dict[str, str], timeout: float,
                        what: str) -> Iterator[http.client.HTTPResponse]:
        req = urllib.request.Request(url, headers=headers)  # noqa: S310  (scheme checked in _origin)
        for name, value in auth.items():
            req.add_unredirected_header(name, value)
        try:
            resp: http.client.HTTPResponse = self._opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            e.close()
            raise status_error(e.code, what) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise NetworkError(f"{what}: {type(e).__name__}: {e}") from None
        with resp:
            yield resp


def _origin(url: str, what: str) -> Origin:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"{what}: refusing to fetch {url!r}: not http(s)")  # e.g. a hub pointing at file:
    return parts.scheme, parts.netloc
