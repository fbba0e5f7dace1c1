"""One big file over parallel ranged GETs: written strictly in order (checked by ossfs-rules), hashed as it
streams, resumed after breaks and kills, one stream where the server ignores Range."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache_operator.downloader import verify_manifest
from modelcache_operator.downloader.ranged import PART_SIZE
from tests.component.conftest import REPO, TOKEN, run_downloader, spawn
from tests.hubs import file_sha256, make_shards
from tests.hubs.huggingface import HuggingFaceHub
from tests.ossfs_rules import OssfsRulesMount

BIG = 96 << 20
PART = PART_SIZE


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_shards(tmp_path_factory.mktemp("big"), count=1, size=BIG, seed=7)


@pytest.fixture
def hub(big_file: dict[str, Path]) -> Iterator[HuggingFaceHub]:
    h = HuggingFaceHub(token=TOKEN)
    h.add_repo(REPO, {"config.json": b'{"architectures": ["LlamaForCausalLM"]}', **big_file})
    with h:
        yield h


@pytest.fixture(params=[False, True], ids=["ossfs", "ossfs-append"])
def mount(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OssfsRulesMount]:
    with OssfsRulesMount(tmp_path / "bucket", tmp_path / "mnt", append=request.param) as m:
        yield m


def the_big(hub: HuggingFaceHub) -> str:
    return next(p for p in hub.repos[REPO].files if p.endswith(".safetensors"))


def assert_published(hub: HuggingFaceHub, root: Path) -> None:
    d = root / hub.repos[REPO].sha
    for f in verify_manifest(d).files:
        assert f.verified and f.sha256 == hub.repos[REPO].files[f.path].sha256 == file_sha256(d / f.path)


def assert_in_order(mount: OssfsRulesMount) -> None:
    """ossfs-rules refuses any write that is not at the end of the file: none was refused but the append
    probe, and the big file went up once per open, whole."""
    assert {e["rule"] for e in mount.events("refused")} <= {"no writes to an existing file"}


def test_one_big_file_over_parallel_ranges_written_in_order(hub: HuggingFaceHub, mount: OssfsRulesMount) -> None:
    hub.faults.bytes_per_second = 24 << 20  # per connection, like a CDN's cap
    root = mount.mountpoint / "volume"
    root.mkdir()
    result = run_downloader(hub, root, MC_CONNECTIONS_PER_FILE="4")
    assert result.code == 0, result.stderr
    assert_published(hub, root)
    assert_in_order(mount)
    assert mount.events("refused") == []
    big = the_big(hub)
    uploads = [e for e in mount.events("upload") if e["path"].endswith(big)]
    assert [(u["size"], u["appendedFrom"]) for u in uploads] == [(BIG, 0)]
    assert hub.bytes_served[big] == BIG  # every byte once
    parts = sorted(int(re.match(r"bytes=(\d+)-", r).group(1)) for r in hub.ranges_seen)  # type: ignore[union-attr]
    assert parts == list(range(0, BIG, PART))
    assert hub.max_parallel_bodies >= 2  # several connections at once
    # The parts and config.json over kept-alive connections: the 4 range workers', the file pool's, and
    # huggingface_hub's own for the listing and HEADs; a connection per request would be one per body.
    assert hub.connections_accepted <= 4 + 1 + 2, hub.connections_accepted


def test_a_broken_part_is_fetched_again(hub: HuggingFaceHub, root: Path) -> None:
    hub.faults.reset_after_bytes = 3 << 20
    hub.faults.reset_times = 2
    result = run_downloader(hub, root)
    assert result.code == 0, result.stderr
    assert hub.faults.reset_times == 0
    assert_published(hub, root)
    # Only the two broken parts were sent twice (at most their first 3 MiB plus socket buffers).
    assert BIG <= hub.bytes_served[the_big(hub)] < BIG + 2 * (4 << 20)


def test_a_server_ignoring_range_gets_one_stream(hub: HuggingFaceHub, root: Path) -> None:
    hub.faults.ignore_range = True
    result = run_downloader(hub, root)
    assert result.code == 0, result.stderr
    assert_published(hub, root)
    assert "ignores Range" in result.stderr


def test_kill_9_mid_file_then_resume(hub: HuggingFaceHub, mount: OssfsRulesMount) -> None:
    root = mount.mountpoint / "volume"
    root.mkdir()
    big = the_big(hub)
    hub.faults.bytes_per_second = 4 << 20
    proc = spawn(hub, root, MC_CONNECTIONS_PER_FILE="4")
    deadline = time.monotonic() + 60
    # Killed once the 4 connections' first parts are whole (and written) and the next ones are half-way.
    assert BIG > 5 * PART
    while hub.bytes_served[big] < 4 * PART + PART // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    path = root / hub.repos[REPO].sha / big
    kept = path.stat().st_size if path.exists() else 0
    assert 0 < kept < BIG and kept % PART == 0  # whole parts only, in order
    hub.wait_bodies_done()
    served = hub.bytes_served[big]
    hub.faults.bytes_per_second = None
    result = run_downloader(hub, root, MC_LOCK_STALE_SECONDS="2", MC_LOCK_WAIT_SECONDS="10")
    assert result.code == 0, result.stderr
    assert_published(hub, root)
    assert_in_order(mount)
    again = hub.bytes_served[big] - served
    assert again == (BIG if not mount.append else BIG - kept)
