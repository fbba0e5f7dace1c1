"""prewarm.py and prewarm.sh against real files on disk, a cold page cache, hostile names, vanishing
files, junk, unreadable files and a memory limit (FUSE mounts: test_prewarm_fuse.py). Residency is
measured independently (tests/residency.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prewarm_cli import PROGRAM, SUMMARY, WARM, cold, open_files, run_python, run_sh
from tests.prewarm_support import (
    CANARY,
    env_with_path,
    make_evil_tree,
    make_junk_folder,
    memory_cgroup,
    oldest_python,
    size_of,
)
from tests.residency import evict, files_under, resident_fraction, write_file

MiB = 1 << 20


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 24 MiB shards and one 512 MiB file, on the real disk."""
    root = tmp_path_factory.mktemp("model")
    (root / "sub").mkdir()
    for i in range(3):
        write_file(root / f"model-0000{i}-of-00003.safetensors", 24 * MiB, seed=i)
    write_file(root / "sub" / "big.gguf", 512 * MiB, seed=7)
    (root / "config.json").write_text("{}")
    return root


def test_cold_files_become_resident_and_a_rerun_reads_nothing(model: Path, tmp_path: Path) -> None:
    files = files_under(model)
    total = sum(p.stat().st_size for p in files)
    cold(files)
    log = tmp_path / "log"
    m, _ = run_python("--dir", str(model), "--concurrency", "8", "--log-file", str(log))
    assert resident_fraction(files) > WARM
    assert m["files"] == str(len(files)) and m["resident"] == "100.0%"
    assert (m["skipped"], m["errors"], m["timeout"]) == ("0", "0", "false")
    assert abs(size_of(m["warmed"]) - total) < 0.01 * total
    assert log.read_text().strip() == m.group(0)

    again, _ = run_python("--dir", str(model), "--log-file", str(log))
    # Only what the mincore check found missing is read: nothing, or a sliver reclaimed since.
    assert size_of(again["warmed"]) < 0.02 * total
    assert again["resident"] == "100.0%"
    assert len(log.read_text().splitlines()) == 2


def test_manifest_decides_what_is_warmed(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "m"
    (root / ".modelcache").mkdir(parents=True)
    wanted = [root / "a.safetensors", root / "b.safetensors"]
    other = root / "not-in-manifest.bin"
    for i, p in enumerate([*wanted, other]):
        write_file(p, 8 * MiB, seed=i)
    manifest = {"files": [{"path": p.name, "size": 8 * MiB, "sha256": ""} for p in wanted]}
    (root / ".modelcache" / "manifest.json").write_text(json.dumps(manifest))
    cold([*wanted, other])
    m, _ = run_python("--dir", str(root))
    assert m["files"] == "2"
    assert resident_fraction(wanted) > WARM
    assert resident_fraction([other]) < 0.05


def test_python_reads_hostile_names_without_running_them(tmp_path: Path) -> None:
    model = tmp_path / f"$(touch {CANARY})"
    model.mkdir()
    files = make_evil_tree(model, size=2 * MiB)
    cold(files)
    m, _ = run_python("--dir", str(model), cwd=tmp_path)
    assert m["files"] == str(len(files)) and m["errors"] == "0"
    assert resident_fraction(files) > WARM
    assert not (tmp_path / CANARY).exists()


def test_sh_fallback_reads_hostile_names_without_running_them(tmp_path: Path) -> None:
    model = tmp_path / f"$(touch {CANARY})"
    model.mkdir()
    files = make_evil_tree(model, size=2 * MiB)
    cold(files)
    line, _ = run_sh(tmp_path, "--dir", str(model), "--concurrency", "4", cwd=tmp_path)
    assert f"files={len(files)} " in line and "errors=0" in line and "timeout=false" in line
    # The sh fallback cannot skip or re-check pages, and reclaim may already take some back: that the files
    # were read at all is what matters here (cold they are under 5%).
    assert resident_fraction(files) > 0.8
    assert not (tmp_path / CANARY).exists()


def test_file_vanishing_mid_run_is_skipped(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    big = root / "000-big.gguf"
    os.link(model / "sub" / "big.gguf", big)  # same disk, no copy
    doomed = [root / f"zz-{i:02d}.bin" for i in range(5)]
    for p in doomed:
        write_file(p, MiB)
    cold([big])
    proc = subprocess.Popen(
        [sys.executable, str(PROGRAM), "warm", "--dir", str(root), "--concurrency", "1"],
        stdout=subprocess.PIPE, text=True,
    )
    # Once the big file is open (by the worker child), the list is made and the small files
    # wait behind its chunks.
    deadline = time.monotonic() + 10
    while str(big) not in open_files(proc.pid):
        assert time.monotonic() < deadline, "prewarm never opened the big file"
    for p in doomed:
        p.unlink()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    m = SUMMARY.search(out)
    assert m, out
    assert (m["files"], m["skipped"], m["errors"]) == ("6", "5", "0")


def test_fifo_never_blocks(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    os.mkfifo(root / "pipe.safetensors")
    write_file(root / "real.bin", MiB)
    manifest = {"files": [{"path": "pipe.safetensors"}, {"path": "real.bin"}]}
    (root / ".modelcache").mkdir()
    (root / ".modelcache" / "manifest.json").write_text(json.dumps(manifest))
    m, elapsed = run_python("--dir", str(root), "--timeout", "30", timeout=60)
    assert (m["files"], m["skipped"], m["timeout"]) == ("1", "1", "false")
    assert elapsed < 10
    line, elapsed = run_sh(tmp_path, "--dir", str(root), "--timeout", "30", timeout=60)
    assert "files=1 " in line and "timeout=false" in line
    assert elapsed < 10


def test_wait_returns_when_the_manifest_appears(tmp_path: Path) -> None:
    root = tmp_path / "m"
    (root / ".modelcache").mkdir(parents=True)

    def publish() -> None:
        time.sleep(1.0)
        tmp = root / ".modelcache" / "manifest.json.tmp"
        tmp.write_text(json.dumps({"files": []}))
        tmp.rename(root / ".modelcache" / "manifest.json")

    writer = threading.Thread(target=publish)
    writer.start()
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(PROGRAM), "wait", "--dir", str(root), "--timeout", "30", "--interval", "0.1"],
        capture_output=True, text=True, timeout=60,
    )
    writer.join()
    assert proc.returncode == 0, proc.stdout
    assert 1.0 <= time.monotonic() - t0 < 10


def test_wait_times_out_with_exit_1(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(PROGRAM), "wait", "--dir", str(tmp_path), "--timeout", "1.5", "--interval", "0.2"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert 1.5 <= time.monotonic() - t0 < 5
    assert "no manifest" in proc.stdout


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder other users can read, with prewarm installed in tools/ (pytest's tmp dirs are 0700)."""
    shared = Path(tempfile.mkdtemp(prefix="prewarm-shared-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        subprocess.run([sys.executable, str(PROGRAM), "install", str(shared / "tools")], check=True,
                       capture_output=True, timeout=60)
        (shared / "tools").chmod(0o755)
        yield shared
    finally:
        shutil.rmtree(shared)


def test_serving_user_who_does_not_own_the_files_still_warms_them(shared_dir: Path) -> None:
    """Linux answers mincore truthfully only to a file's owner (or CAP_FOWNER): to anyone else every page
    looks resident. The downloader writes as 65532; a server running as another user must still warm."""
    model = shared_dir / "model"
    model.mkdir(mode=0o755)
    shard = model / "model.safetensors"
    write_file(shard, 16 * MiB)
    os.chown(shard, 65532, 65532)
    shard.chmod(0o644)
    evict([shard])
    assert resident_fraction([shard]) < 0.05
    proc = subprocess.run(
        ["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "/usr/bin/python3", "-I", "-S",
         str(shared_dir / "tools" / "prewarm.py"), "warm", "--dir", str(model)],
        capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    m = SUMMARY.search(proc.stdout)
    assert m, proc.stdout
    assert size_of(m["warmed"]) == 16 * MiB
    assert m["resident"] == "n/a(unmeasurable)"  # it cannot know, and says so rather than claiming 100%
    assert resident_fraction([shard]) > WARM  # measured by root, who gets the truth


@pytest.fixture
def junk_model(tmp_path: Path) -> tuple[Path, list[Path], Path]:
    """Two 32 MiB weight shards among junk (tests/prewarm_support.make_junk_folder) and a 64 MiB
    log file; the manifest lists the shards, the junk and the log (a manifest cannot be trusted
    to list only data). Returns (root, shards, log)."""
    root = tmp_path / "junk-model"
    (root / ".modelcache").mkdir(parents=True)
    shards = [root / f"model-0000{i}-of-00002.safetensors" for i in range(2)]
    for i, p in enumerate(shards):
        write_file(p, 32 * MiB, seed=i)
    log = root / "train.log"
    write_file(log, 64 * MiB, seed=9)
    junk = make_junk_folder(root)
    listed = [log, *junk, *shards]  # weights last on purpose: prewarm puts them first
    manifest = {"files": [{"path": p.name} for p in listed]}
    (root / ".modelcache" / "manifest.json").write_text(json.dumps(manifest))
    return root, shards, log


@pytest.mark.parametrize("with_manifest", [True, False], ids=["manifest", "walk"])
def test_sparse_fifo_and_junk_leave_the_weights_fully_resident(
    junk_model: tuple[Path, list[Path], Path], with_manifest: bool
) -> None:
    root, shards, log = junk_model
    if not with_manifest:
        (root / ".modelcache" / "manifest.json").unlink()
    cold([*shards, log])
    m, _ = run_python("--dir", str(root), "--timeout", "60", timeout=90)
    assert resident_fraction(shards) == 1.0
    assert m["timeout"] == "false" and m["errors"] == "0"
    # Only real data was read: the shards and the log, not one byte of the 2 TiB of holes.
    assert size_of(m["warmed"]) == 128 * MiB
    assert size_of(m["bytes"]) == 128 * MiB
    # FIFO, device, dangling link and the link out of the folder; the manifest also names the
    # directory loop (the walk never follows it).
    assert m["skipped"] == ("5" if with_manifest else "4")


def test_sh_fallback_skips_the_sparse_file_and_the_fifo(junk_model: tuple[Path, list[Path], Path],
                                                        tmp_path: Path) -> None:
    root, shards, _ = junk_model
    cold(shards)
    line, _ = run_sh(tmp_path, "--dir", str(root), "--timeout", "60", timeout=90)
    assert "timeout=false" in line and "sparse=1 " in line and "errors=0" in line
    assert resident_fraction(shards) > 0.8  # it cannot re-check; reclaim may take a little back


def test_a_missing_folder_is_reported_as_such(tmp_path: Path) -> None:
    m, _ = run_python("--dir", str(tmp_path / "absent"))
    assert m["resident"] == "n/a(folder-missing)" and m["files"] == "0"
    empty = tmp_path / "empty"
    (empty / ".modelcache").mkdir(parents=True)
    (empty / ".modelcache" / "manifest.json").write_text(json.dumps({"files": []}))
    m, _ = run_python("--dir", str(empty))
    assert m["resident"] == "n/a(no-files)"
    line, _ = run_sh(tmp_path, "--dir", str(tmp_path / "absent"))
    assert "files=0 " in line and "resident=n/a(folder-missing)" in line


def test_unreadable_files_are_reported_as_such(shared_dir: Path) -> None:
    root = shared_dir / "locked"
    root.mkdir(mode=0o755)
    shard = root / "model.safetensors"
    write_file(shard, MiB)
    shard.chmod(0)
    proc = subprocess.run(
        ["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "/usr/bin/python3", "-I", "-S",
         str(shared_dir / "tools" / "prewarm.py"), "warm", "--dir", str(root)],
        capture_output=True, text=True, timeout=60, cwd="/")
    m = SUMMARY.search(proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert m["resident"] == "n/a(unreadable)" and m["skipped"] == "1"


@pytest.mark.parametrize("python", ["this interpreter", "oldest supported"])
def test_under_a_memory_limit_below_the_model_it_warms_within_budget(tmp_path: Path, python: str) -> None:
    """Page cache is charged to the reader's cgroup: reading a 256 MiB model inside 192 MiB would make
    the kernel evict the first shards to fit the last. Prewarm stops at its budget instead, on the
    serving image's python3 too (Python 3.8: its zip() had no strict=, once an error here)."""
    interpreter = sys.executable if python == "this interpreter" else oldest_python()
    root = tmp_path / "model"
    (root / ".modelcache").mkdir(parents=True)
    shards = [root / f"model-0000{i}-of-00004.safetensors" for i in range(4)]
    for i, p in enumerate(shards):
        write_file(p, 64 * MiB, seed=i)
    (root / ".modelcache" / "manifest.json").write_text(json.dumps({"files": [{"path": p.name} for p in shards]}))
    cold(shards)
    with memory_cgroup(192 * MiB) as (_, procs):
        proc = subprocess.run(
            ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, interpreter, "-I", "-S", str(PROGRAM), "warm",
             "--dir", str(root), "--memory-headroom", str(16 * MiB)],
            capture_output=True, text=True, timeout=120, env=env_with_path(os.environ["PATH"]))
    assert proc.returncode == 0, proc.stderr
    m = SUMMARY.search(proc.stdout)
    assert m, proc.stdout
    budget = m["budget"]
    assert budget.endswith("(cgroup)"), proc.stdout
    assert size_of(m["warmed"]) <= size_of(budget.removesuffix("(cgroup)"))
    assert size_of(m["over_budget"]) >= 64 * MiB and "over budget:" in proc.stdout
    per_shard = [resident_fraction([p]) for p in shards]
    resident_bytes = sum(f * 64 * MiB for f in per_shard)
    assert resident_bytes <= size_of(budget.removesuffix("(cgroup)")), per_shard
    # The first-priority shards stay resident: nothing read later pushed them out.
    assert per_shard[0] > WARM and per_shard[1] > WARM, per_shard
    assert per_shard[3] < 0.05, per_shard


def test_the_summary_reaches_the_container_log_and_a_dead_pipe_never_blocks(tmp_path: Path) -> None:
    """--container-log is PID 1's stdout in a pod (a pipe to the runtime, read by `kubectl logs`)."""
    root = tmp_path / "m"
    root.mkdir()
    write_file(root / "a.safetensors", MiB)
    pipe = tmp_path / "stdout-of-pid-1"
    os.mkfifo(pipe)
    runtime_end = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # the reading end, open before the hook runs
    try:
        m, _ = run_python("--dir", str(root), "--container-log", str(pipe))
        assert os.read(runtime_end, 65536).decode() == m.group(0) + "\n"
    finally:
        os.close(runtime_end)
    # Nobody reading (the runtime gone): the write fails at once instead of hanging the hook.
    m, elapsed = run_python("--dir", str(root), "--container-log", str(pipe), "--timeout", "30")
    assert m["timeout"] == "false" and elapsed < 10
