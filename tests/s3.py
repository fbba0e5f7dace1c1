"""A loopback S3 server (moto's) and a read-write s3fs mount of one of its buckets, for downloader tests.

    with MotoS3(tmp_path / "moto.log") as s3, S3fsMount(s3, "volume-1", tmp_path / "mnt") as mnt:
        ...                       # write through mnt; s3fs uploads a file when it is closed, as on real S3

s3fs is the real FUSE client (Debian `s3fs`), moto the S3 protocol on 127.0.0.1. Either one that cannot
start raises with its own output: the test fails with the reason, it is never skipped.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.fuse_daemon import unmount, wait_mounted
from tests.hubs import free_port

# moto checks no signature; s3fs still insists on a key pair to sign with.
ACCESS_KEY, SECRET_KEY = "testing-access-key", "testing-secret-key"


class S3StartError(RuntimeError):
    pass


class MotoS3:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoS3:
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                           str(self.port)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise S3StartError(f"moto S3 server did not answer on {self.url} "
                                       f"(exit {self._proc.returncode}): {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def create_bucket(self, name: str) -> None:
        req = urllib.request.Request(f"{self.url}/{name}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:
                raise S3StartError(f"creating bucket {name}: HTTP {resp.status}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class S3fsMount:
    """A new bucket on `s3`, mounted read-write by s3fs in the foreground (its own process, ended on stop)."""

    def __init__(self, s3: MotoS3, bucket: str, mountpoint: Path) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.mountpoint = mountpoint
        self._output = mountpoint.parent / f"{mountpoint.name}.s3fs-output.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> S3fsMount:
        self.s3.create_bucket(self.bucket)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        passwd = self.mountpoint.parent / f"{self.mountpoint.name}.passwd-s3fs"
        passwd.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
        passwd.chmod(0o600)  # s3fs refuses a key file others can read
        opts = ["use_path_request_style", f"url={self.s3.url}", f"passwd_file={passwd}", "endpoint=us-east-1",
                "retries=2", "dbglevel=warn"]
        with self._output.open("wb") as out:
            self._proc = subprocess.Popen(["s3fs", self.bucket, str(self.mountpoint), "-f", "-o", ",".join(opts)],
                                          stdout=out, stderr=subprocess.STDOUT)
        why = wait_mounted(self._proc, self.mountpoint, self._output, f"s3fs of bucket {self.bucket}")
        if why is not None:
            self.stop()
            raise S3StartError(why)
        return self

    def stop(self) -> None:
        unmount(self.mountpoint, self._proc)

    def __enter__(self) -> S3fsMount:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["MotoS3", "S3StartError", "S3fsMount"]
