"""The processes of the local control plane: free ports, liveness, health probes, stopping by process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0  # not our child (started by another process); fall through to a signal probe
    if waited == pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_processes(pids: dict[str, int], grace: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL whatever is left after the grace period."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in pids.values():
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - http(s) URLs we build
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def https_ok(url: str, pki: Path | None) -> bool:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt")) if pki else ssl._create_unverified_context()  # noqa: S323
    if pki:
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 - https URLs we build
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
