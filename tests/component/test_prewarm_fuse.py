"""prewarm.py and prewarm.sh on s3fs mounts of a loopback object store (tests/slowfs.py): a hung read
bounds neither past its timeout, neither leaves a reader behind, and FUSE files are read two at a time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache_operator.prewarm import prewarm_run
from tests.prewarm_cli import PROGRAM, SUMMARY, WARM, open_files, run_python, run_sh
from tests.prewarm_support import env_with_path, wait_until_gone
from tests.residency import files_under, resident_fraction, write_file
from tests.slowfs import s3fs_mount, slow_http

MiB = 1 << 20


@pytest.fixture
def hung_mount(tmp_path: Path) -> Iterator[Path]:
    """An s3fs mount where one object never answers (s3fs then stalls other reads too)."""
    store = tmp_path / "store"
    store.mkdir()
    write_file(store / "a-ok.safetensors", 24 * MiB, seed=1)
    write_file(store / "b-hangs.safetensors", 4 * MiB)
    with (slow_http(store, latency=0.01, hang={"b-hangs.safetensors"}) as url,
          s3fs_mount(url, tmp_path / "mnt") as mnt):
        yield mnt


def test_python_hung_fuse_read_is_bounded_by_the_timeout(hung_mount: Path) -> None:
    m, elapsed = run_python("--dir", str(hung_mount), "--timeout", "3", timeout=60)
    assert m["timeout"] == "true"
    assert elapsed < 3 + 1.0


def test_sh_hung_fuse_read_is_bounded_by_the_timeout(hung_mount: Path, tmp_path: Path) -> None:
    line, elapsed = run_sh(tmp_path, "--dir", str(hung_mount), "--timeout", "3", timeout=60)
    assert "timeout=true" in line
    assert elapsed < 3 + 2.5  # one-second polling


def _prewarm_files_open_under(mnt: Path) -> int:
    """Distinct files under mnt held open by prewarm.py processes (the hook's forked worker)."""
    prefix, open_files = str(mnt) + "/", set[str]()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or str(PROGRAM).encode() not in (proc / "cmdline").read_bytes():
                continue
            open_files.update(t for t in (os.readlink(fd) for fd in (proc / "fd").iterdir()) if t.startswith(prefix))
        except OSError:  # gone, or an fd closed while we looked
            continue
    return len(open_files)


def test_fuse_files_are_read_two_at_a_time_whatever_the_concurrency(tmp_path: Path) -> None:
    """One s3fs process serves ~the same throughput to any number of readers; more files in flight only cost
    CPU (BENCHMARKS.md, "Prewarm"). With --concurrency 16, prewarm reads FUSE_FILES_IN_FLIGHT (2) files at
    once: never more, and not fewer, so one slow file does not stall the stream."""
    store = tmp_path / "store"
    store.mkdir()
    for i in range(6):
        write_file(store / f"model-0000{i}-of-00006.safetensors", 8 * MiB, seed=i)
    with (slow_http(store, latency=0.01, stream_bps=8 * MiB) as url, s3fs_mount(url, tmp_path / "mnt") as mnt):
        proc = subprocess.Popen(
            [sys.executable, str(PROGRAM), "warm", "--dir", str(mnt), "--concurrency", "16", "--timeout", "60"],
            env=env_with_path(os.environ["PATH"]), stdout=subprocess.PIPE, text=True)
        in_flight = []
        while proc.poll() is None:
            in_flight.append(_prewarm_files_open_under(mnt))
            time.sleep(0.02)
        out = proc.communicate()[0]
        resident = resident_fraction(files_under(mnt))
    m = SUMMARY.search(out)
    assert m and m["timeout"] == "false" and m["errors"] == "0", out
    assert max(in_flight) == prewarm_run.FUSE_FILES_IN_FLIGHT == 2, in_flight
    assert resident > WARM, out


def test_python_leaves_no_reader_after_its_timeout(hung_mount: Path) -> None:
    m, _ = run_python("--dir", str(hung_mount), "--timeout", "3", timeout=60)
    assert m["timeout"] == "true"
    assert wait_until_gone(hung_mount) == []


def test_sh_leaves_no_reader_after_its_timeout(hung_mount: Path, tmp_path: Path) -> None:
    line, _ = run_sh(tmp_path, "--dir", str(hung_mount), "--timeout", "3", timeout=60)
    assert "timeout=true" in line
    assert wait_until_gone(hung_mount) == []


def test_a_killed_python_hook_leaves_no_reader(hung_mount: Path) -> None:
    """The hook's outer guard (`timeout -s KILL`) kills prewarm.py itself: its reader dies with it."""
    proc = subprocess.Popen([sys.executable, str(PROGRAM), "warm", "--dir", str(hung_mount), "--timeout", "60"],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not any(p.startswith(str(hung_mount)) for p in open_files(proc.pid)):
        assert time.monotonic() < deadline, "prewarm never opened a file on the mount"
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    assert wait_until_gone(hung_mount) == []
