"""A FUSE file system with ossfs 2.0's write rules, for downloader tests (rules in `tests.ossfs_rules.fs`).

    with OssfsRulesMount(tmp_path / "bucket", tmp_path / "mnt", append=False) as m:
        ...                     # write through m.mountpoint; a second OssfsRulesMount of the same bucket is
        m.events("refused")     # another client; events: "upload", "rename", "refused"

A mount that cannot start fails the test with the file system's own output; it is never skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fuse_daemon import unmount, wait_mounted

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
        if (why := wait_mounted(self._proc, self.mountpoint, out, "ossfs-rules")) is not None:
            self.stop()
            raise OssfsMountError(why)
        return self

    def stop(self) -> None:
        unmount(self.mountpoint, self._proc)

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
