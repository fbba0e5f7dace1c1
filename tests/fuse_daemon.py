"""Start and stop a FUSE daemon run in the foreground by a test (ossfs-rules, s3fs): what both mounts share."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def wait_mounted(proc: subprocess.Popen[bytes], mountpoint: Path, output: Path, what: str,
                 seconds: float = 20) -> str | None:
    """None once `mountpoint` is mounted; else why not (the daemon's exit and the end of its output)."""
    deadline = time.monotonic() + seconds
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            return f"{what} did not mount {mountpoint} (exit {proc.poll()}): {output.read_text()[-2000:]}"
        time.sleep(0.05)
    return None


def unmount(mountpoint: Path, proc: subprocess.Popen[bytes] | None) -> None:
    """Unmount (lazily if busy), then wait for the daemon to end, killing it if it does not."""
    if os.path.ismount(mountpoint):
        subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True)
        if os.path.ismount(mountpoint):
            subprocess.run(["umount", "-l", str(mountpoint)], check=True)
    if proc is not None:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
