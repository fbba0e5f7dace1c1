"""The downloader on the storage it writes to: local disk, the ossfs-rules FUSE file system, and s3fs over a
loopback S3 server (moto), from both hubs.

ossfs-rules (tests/ossfs_rules) enforces ossfs 2.0's write rules: sequential append-only writes, a file
visible only once closed, non-atomic rename, and (without `append`) no writes to an existing file at all.
Its event log shows every upload, rename and refusal, so the tests check how the downloader wrote, not only
what ended up there. s3fs is the real client of the object stores our users mount: it takes appends (it
re-uploads the object), so a partial file is continued there as on local disk.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelcache_operator.downloader import verify_manifest
from tests.component.conftest import REPO, TOKEN, run_downloader, spawn
from tests.hubs import FakeHub, file_sha256
from tests.hubs.huggingface import HuggingFaceHub
from tests.hubs.modelscope import ModelScopeHub
from tests.ossfs_rules import OssfsRulesMount
from tests.s3 import MotoS3, S3fsMount

SMALL_FILE = 64 << 10  # metadata files (manifest, lock, hash records) are the only ones renamed
APPEND_REFUSED = "no writes to an existing file"
VOLUMES = ["local", "ossfs", "ossfs-append", "s3fs"]
_buckets = itertools.count()


@dataclass
class Volume:
    kind: str
    root: Path
    mount: OssfsRulesMount | None

    def refusals(self) -> list[str]:
        return [e["rule"] for e in self.mount.events("refused")] if self.mount else []

    def uploads(self, file: Path) -> list[dict[str, int]]:
        if self.mount is None:
            return []
        name = "/" + str(file.relative_to(self.mount.mountpoint))
        return [e for e in self.mount.events("upload") if e["path"] == name]

    def check_write_rules(self) -> None:
        """Nothing the backend refused except the append probe, and only small files renamed."""
        if self.mount is None:
            return
        assert set(self.refusals()) <= {APPEND_REFUSED}, self.mount.events("refused")
        big = [e for e in self.mount.events("rename") if e["size"] > SMALL_FILE]
        assert not big, big


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    with MotoS3(tmp_path_factory.mktemp("s3") / "moto.log") as server:  # S3StartError fails the test
        yield server


@pytest.fixture(params=VOLUMES)
def volume(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Volume]:
    kind: str = request.param
    if kind == "local":
        root = tmp_path / "volume"
        root.mkdir()
        yield Volume(kind, root, None)
        return
    if kind == "s3fs":
        s3: MotoS3 = request.getfixturevalue("s3")
        with S3fsMount(s3, f"volume-{next(_buckets)}", tmp_path / "mnt") as mnt:
            root = mnt.mountpoint / "volume"
            root.mkdir()
            yield Volume(kind, root, None)
        return
    with OssfsRulesMount(tmp_path / "bucket", tmp_path / "mnt", append=kind == "ossfs-append") as m:
        root = m.mountpoint / "volume"
        root.mkdir()
        yield Volume(kind, root, m)


@pytest.fixture(params=[HuggingFaceHub, ModelScopeHub], ids=["hf", "ms"])
def sharded_hub(request: pytest.FixtureRequest, model_files: dict[str, Path],
                shards: dict[str, Path]) -> Iterator[FakeHub]:
    hub: FakeHub = request.param(token=TOKEN)
    hub.add_repo(REPO, {**model_files, **shards})
    with hub:
        yield hub


def assert_published(hub: FakeHub, root: Path) -> None:
    d = root / hub.repos[REPO].sha
    manifest = verify_manifest(d)
    files = hub.repos[REPO].files
    assert {f.path for f in manifest.files} == set(files)
    for f in manifest.files:
        assert f.verified and f.sha256 == files[f.path].sha256 == file_sha256(d / f.path), f.path


def test_download_writes_each_file_once_in_order(sharded_hub: FakeHub, volume: Volume) -> None:
    result = run_downloader(sharded_hub, volume.root)
    assert result.code == 0, result.stderr
    assert_published(sharded_hub, volume.root)
    volume.check_write_rules()
    assert volume.refusals() == []
    if volume.mount is not None:
        for path, f in sharded_hub.repos[REPO].files.items():
            uploads = volume.uploads(volume.root / sharded_hub.repos[REPO].sha / path)
            assert [(u["size"], u["appendedFrom"]) for u in uploads] == [(f.size, 0)], path


def test_connection_reset_resumes_within_the_rules(sharded_hub: FakeHub, volume: Volume) -> None:
    shard = next(p for p in sharded_hub.repos[REPO].files if p.startswith("model-00001"))
    size = sharded_hub.repos[REPO].files[shard].size
    sharded_hub.faults.reset_after_bytes = 20 << 20
    sharded_hub.faults.reset_times = 1
    result = run_downloader(sharded_hub, volume.root, MC_MAX_WORKERS="1")
    assert result.code == 0, result.stderr
    assert sharded_hub.faults.reset_times == 0
    assert_published(sharded_hub, volume.root)
    volume.check_write_rules()
    served = sharded_hub.bytes_served
    cut = sum(served.values()) - sum(f.size for f in sharded_hub.repos[REPO].files.values())
    if volume.kind == "ossfs":
        # The partial shard cannot be continued there: it is fetched again whole, and said so.
        assert APPEND_REFUSED in volume.refusals()
        assert cut >= (20 << 20) - (8 << 20), served  # what arrived before the cut, fetched twice
        assert "does not append to an existing file" in result.stderr
    else:
        assert cut < 8 << 20, served  # resumed with a Range request: only in-flight bytes again
    assert served[shard] >= size


def test_kill_9_then_resume(sharded_hub: FakeHub, volume: Volume) -> None:
    hub, root = sharded_hub, volume.root
    repo = hub.repos[REPO]
    total = sum(f.size for f in repo.files.values())
    hub.faults.bytes_per_second = 8 << 20
    # One stream per file, so a file is cut anywhere (parallel ranges cut at parts: test_downloader_ranged).
    proc = spawn(hub, root, MC_MAX_WORKERS="2", MC_CONNECTIONS_PER_FILE="1")
    deadline = time.monotonic() + 60
    while sum(hub.bytes_served.values()) < total // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    d = root / repo.sha
    assert not (d / ".modelcache" / "manifest.json").exists()
    # What the killed writer had: the kernel closed its files, so the mount uploaded them as far as they got.
    before = {p: (d / p).stat().st_size if (d / p).is_file() else 0 for p in repo.files}
    partial = [p for p in repo.files if 0 < before[p] < repo.files[p].size]
    assert partial, before
    hub.wait_bodies_done()
    served_first = dict(hub.bytes_served)
    hub.faults.bytes_per_second = None

    result = run_downloader(hub, root, MC_LOCK_STALE_SECONDS="2", MC_LOCK_WAIT_SECONDS="10")
    assert result.code == 0, result.stderr
    assert_published(hub, root)
    volume.check_write_rules()
    again = {p: hub.bytes_served[p] - served_first.get(p, 0) for p in repo.files}
    for path, f in repo.files.items():
        if before[path] == f.size:
            assert again[path] == 0, path  # complete files are kept
        elif path in partial and volume.kind == "ossfs":
            assert again[path] == f.size, path  # no append on this backend: fetched again whole
        else:
            assert again[path] == f.size - before[path], path  # continued where it stopped
    if volume.kind == "ossfs":
        assert APPEND_REFUSED in volume.refusals()
    if volume.mount is not None:
        for path in partial:
            last = volume.uploads(d / path)[-1]
            assert last["size"] == repo.files[path].size
            assert last["appendedFrom"] == (0 if volume.kind == "ossfs" else before[path])
