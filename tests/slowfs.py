"""A slow object store on loopback, FUSE-mounted: a small S3-style HTTP server (bucket listing,
HEAD, ranged GET) with per-request latency, a per-stream bandwidth cap and optionally
never-answering objects, mounted read-only by s3fs (the base of ossfs) without a disk cache, so
every read goes to the server."""

from __future__ import annotations

import html
import os
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SEND_STEP = 1 << 20
BUCKET = "models"


class _Handler(BaseHTTPRequestHandler):
    server: _SlowServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        srv = self.server
        url = urllib.parse.urlsplit(self.path)
        bucket, _, rel = urllib.parse.unquote(url.path).lstrip("/").partition("/")
        if bucket != BUCKET:
            self.send_error(404)
            return
        if not rel:
            self._listing(urllib.parse.parse_qs(url.query), body)
            return
        path = (srv.root / rel).resolve()
        if srv.root not in path.parents or not path.is_file():
            self.send_error(404)
            return
        if body and rel in srv.hang:
            srv.stopped.wait()  # an object store that accepted the request and never answers
            return
        time.sleep(srv.latency)
        size = path.stat().st_size
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start, end = int(a or 0), min(int(b) if b else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        self.end_headers()
        if not body:
            return
        with open(path, "rb") as f:
            pos = start
            t0 = time.monotonic()
            while pos <= end and not srv.stopped.is_set():
                n = min(SEND_STEP, end - pos + 1)
                try:
                    self.wfile.flush()
                    self.connection.sendfile(f, pos, n)
                except OSError:  # client closed the stream (rclone seeks by reopening)
                    return
                pos += n
                if srv.stream_bps:
                    ahead = (pos - start) / srv.stream_bps - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)

    def _listing(self, query: dict[str, list[str]], body: bool) -> None:
        """ListObjects (v1), all keys in one page."""
        prefix = query.get("prefix", [""])[0]
        delim = query.get("delimiter", [""])[0]
        marker = query.get("marker", [""])[0]
        keys, prefixes = [], set()
        for p in sorted(self.server.root.rglob("*")):
            key = p.relative_to(self.server.root).as_posix()
            if not p.is_file() or not key.startswith(prefix) or key <= marker:
                continue
            rest = key[len(prefix):]
            if delim and delim in rest:
                prefixes.add(prefix + rest.split(delim)[0] + delim)
            else:
                keys.append((key, p.stat().st_size))
        esc = html.escape
        data = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{BUCKET}</Name><Prefix>{esc(prefix)}</Prefix><Marker>{esc(marker)}</Marker>"
            f"<MaxKeys>100000</MaxKeys><Delimiter>{esc(delim)}</Delimiter><IsTruncated>false</IsTruncated>"
            + "".join(
                f"<Contents><Key>{esc(k)}</Key><LastModified>2025-01-01T00:00:00.000Z</LastModified>"
                f'<ETag>"{n:x}"</ETag><Size>{n}</Size><StorageClass>STANDARD</StorageClass></Contents>'
                for k, n in keys
            )
            + "".join(f"<CommonPrefixes><Prefix>{esc(p)}</Prefix></CommonPrefixes>" for p in sorted(prefixes))
            + "</ListBucketResult>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


class _SlowServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, latency: float, stream_bps: float, hang: set[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self.latency = latency
        self.stream_bps = stream_bps
        self.hang = hang
        self.stopped = threading.Event()


@contextmanager
def slow_http(
    root: str | os.PathLike[str], latency: float = 0.0, stream_bps: float = 0.0, hang: set[str] | None = None
) -> Iterator[str]:
    """Serves root on 127.0.0.1; yields the base URL. Each GET waits `latency` seconds before
    answering and streams at most `stream_bps` bytes/s (0: unlimited); GETs of the relative
    paths in `hang` never answer."""
    srv = _SlowServer(Path(root), latency, stream_bps, hang or set())
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.stopped.set()
        srv.shutdown()
        srv.server_close()


@contextmanager
def s3fs_mount(url: str, mountpoint: str | os.PathLike[str], *options: str) -> Iterator[Path]:
    """Mounts the bucket read-only at mountpoint with s3fs (no disk cache; kernel_cache keeps
    the page cache across opens, as a prewarmed mount must); unmounts on exit."""
    mnt = Path(mountpoint)
    mnt.mkdir(parents=True, exist_ok=True)
    opts = ["ro", "public_bucket=1", "use_path_request_style", f"url={url.rstrip('/')}",
            "kernel_cache", "stat_cache_expire=3600", "retries=1", *options]
    proc = subprocess.Popen(
        ["s3fs", BUCKET, str(mnt), "-f", "-o", ",".join(opts)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                raise RuntimeError(f"s3fs mount failed: {err}")
            time.sleep(0.05)
        yield mnt
    finally:
        subprocess.run(["fusermount", "-u", "-z", str(mnt)], check=False, capture_output=True)
        proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:  # stuck on a request that never answers
            proc.kill()
            proc.wait()
