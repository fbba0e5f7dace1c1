"""A FUSE file system with ossfs 2.0's write rules, for downloader tests (rules in `tests.ossfs_rules.fs`).

    with OssfsRulesMount(tmp_path / "bucket", tmp_path / "mnt", append=False) as m:
        ...                     # write through m.mountpoint; a second OssfsRulesMount of the same bucket is
        m.events("refused")     # another client; events: "upload", "rename", "refused"

A mount that cannot start fails the test with the file system's own output; it is never skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class OssfsMountError(RuntimeError):
    pass


class OssfsRulesMount:
    def __init__(self, bucket: Path, mountpoint: Path, *, append: bool = False) -> None:
        self.bucket = bucket
        self.mountpoint = mountpoint
        self.append = append
        self.log = mountpoint.parent / f"{mountpoint.name}.ossfs-events.jsonl"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OssfsRulesMount:
        self.bucket.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "tests.ossfs_rules", str(self.bucket), str(self.mountpoint),
               "--log", str(self.log), *(["--append"] if self.append else [])]
        out = self.mountpoint.parent / f"{self.mountpoint.name}.ossfs-output.log"
        with out.open("wb") as f:
            self._proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mountpoint):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise OssfsMountError(f"ossfs-rules did not mount {self.mountpoint} "
                                      f"(exit {self._proc.returncode}): {out.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if os.path.ismount(self.mountpoint):
            subprocess.run(["umount", str(self.mountpoint)], check=False, capture_output=True)
            if os.path.ismount(self.mountpoint):
                subprocess.run(["umount", "-l", str(self.mountpoint)], check=True)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [e for e in lines if kind is None or e["event"] == kind]

    def __enter__(self) -> OssfsRulesMount:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["OssfsMountError", "OssfsRulesMount"]
