"""One writer: a lock left by an earlier pod of our own Job is taken at once, a waiting writer says why,
a lost heartbeat stops the writer, and only the current holder publishes (the fencing check)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from modelcache_operator.downloader import ExitCode
from modelcache_operator.downloader.errors import LockHeld
from modelcache_operator.downloader.lock import LOCK_NAME, VolumeLock
from tests.component.conftest import run_downloader
from tests.hubs import FakeHub


def write_lock(root: Path, *, job: str, holder: str, age: float = 1) -> None:
    (root / LOCK_NAME).write_text(json.dumps({"holder": holder, "pid": 7, "job": job, "token": "theirs",
                                              "heartbeat": time.time() - age}))


def test_a_lock_left_by_an_earlier_pod_of_our_job_is_taken_at_once(hf_hub: FakeHub, root: Path) -> None:
    write_lock(root, job="mc-dl-x", holder="mc-dl-x-aaaaa")  # fresh: a killed pod's last heartbeat
    t0 = time.monotonic()
    result = run_downloader(hf_hub, root, MC_JOB_NAME="mc-dl-x", POD_NAME="mc-dl-x-bbbbb",
                            MC_LOCK_STALE_SECONDS="600", MC_LOCK_WAIT_SECONDS="600")
    assert result.code == 0, result.stderr
    assert "an earlier pod of this Job" in result.stderr
    assert time.monotonic() - t0 < 600  # it did not wait out the stale period (the test would time out)
    assert not (root / LOCK_NAME).exists()


def test_a_waiting_writer_says_why(hf_hub: FakeHub, root: Path) -> None:
    write_lock(root, job="mc-dl-other", holder="another-pod")
    result = run_downloader(hf_hub, root, MC_JOB_NAME="mc-dl-x", POD_NAME="mc-dl-x-bbbbb",
                            MC_LOCK_WAIT_SECONDS="2.5", MC_LOCK_HEARTBEAT_SECONDS="1")
    assert result.code == ExitCode.LOCK_HELD, result.stderr
    waits = [line for line in result.stderr.splitlines() if "Waiting for the volume lock" in line]
    assert len(waits) >= 2 and all("another-pod" in line for line in waits), result.stderr
    assert not hf_hub.bytes_served


def test_only_the_current_holder_publishes(tmp_path: Path) -> None:
    lock = VolumeLock(tmp_path, {"holder": "me", "job": "j"}, heartbeat_interval=60)
    lock.acquire()
    try:
        lock.check_held()
        write_lock(tmp_path, job="j2", holder="usurper")  # someone took it over meanwhile
        with pytest.raises(LockHeld, match="usurper"):
            lock.check_held()
    finally:
        lock.release()
    assert (tmp_path / LOCK_NAME).exists()  # not ours to remove


def test_a_lost_heartbeat_stops_the_writer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock = VolumeLock(tmp_path, {"holder": "me"}, stale_after=0.6, heartbeat_interval=0.1)
    lock.acquire()
    try:
        (tmp_path / LOCK_NAME).unlink()
        (tmp_path / LOCK_NAME).mkdir()  # the heartbeat can no longer be written
        with caplog.at_level(logging.ERROR):
            assert lock.lost.wait(5)
        with pytest.raises(LockHeld):
            lock.check_held()
    finally:
        lock.release()
        (tmp_path / LOCK_NAME).rmdir()
    assert "No lock heartbeat written" in caplog.text
