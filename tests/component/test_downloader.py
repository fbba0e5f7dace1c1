"""The downloader as the Job runs it (a subprocess), against fake hubs speaking the real protocols."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from modelcache_operator.downloader import ExitCode, load_manifest, verify_manifest
from modelcache_operator.downloader.lock import LOCK_NAME
from tests.component.conftest import REPO, TOKEN, Result, run_downloader, spawn
from tests.hubs import FakeHub, file_sha256
from tests.hubs.huggingface import HuggingFaceHub
from tests.hubs.modelscope import ModelScopeHub


def revision_dir(hub: FakeHub, root: Path) -> Path:
    return root / hub.repos[REPO].sha


def assert_no_token(result: Result) -> None:
    assert TOKEN not in result.all_output
    for p in result.root.rglob("*"):
        if p.is_file() and p.stat().st_size < 1 << 20:
            assert TOKEN.encode() not in p.read_bytes(), p


def assert_published(hub: FakeHub, root: Path) -> None:
    d = revision_dir(hub, root)
    manifest = verify_manifest(d)
    repo_files = hub.repos[REPO].files
    assert {f.path for f in manifest.files} == set(repo_files)
    for f in manifest.files:
        assert f.sha256 == repo_files[f.path].sha256
        assert file_sha256(d / f.path) == f.sha256


def test_happy_path(hub: FakeHub, root: Path) -> None:
    result = run_downloader(hub, root)
    assert result.code == 0, result.stderr
    assert_published(hub, root)
    d = revision_dir(hub, root)
    manifest = load_manifest(d)
    assert manifest.revision == hub.repos[REPO].sha == d.name
    assert manifest.source.hub == ("huggingface" if isinstance(hub, HuggingFaceHub) else "modelscope")
    assert manifest.source.requestedRevision == hub.default_branch
    assert manifest.format == "safetensors"
    assert manifest.model.architecture == "BertModel"
    assert manifest.totalBytes == sum(f.size for f in hub.repos[REPO].files.values())
    # Nothing but the model and the manifest: no temp files, no hash records, no lock left behind.
    extra = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()} - set(hub.repos[REPO].files)
    assert extra == {".modelcache/manifest.json"}
    assert not (root / LOCK_NAME).exists()
    with safe_open(str(d / "model.safetensors"), framework="numpy") as st:
        assert len(list(st.keys())) > 10
    assert all(h == f"Bearer {TOKEN}" for h in hub.auth_headers_seen)
    assert_no_token(result)

    # A second run finds the manifest and downloads nothing.
    served = dict(hub.bytes_served)
    again = run_downloader(hub, root)
    assert again.code == 0, again.stderr
    assert dict(hub.bytes_served) == served
    assert "already published" in again.stderr


def test_mirror_endpoint_with_path_prefix(model_files: dict[str, Path], root: Path) -> None:
    hub = HuggingFaceHub(token=TOKEN, prefix="/hf-mirror")
    hub.add_repo(REPO, dict(model_files))
    with hub:
        assert hub.url.endswith("/hf-mirror")
        result = run_downloader(hub, root)
        assert result.code == 0, result.stderr
        assert_published(hub, root)
        assert hub.requests and all(path.startswith("/hf-mirror/") for _, path in hub.requests)


@pytest.mark.parametrize("hub_cls", [HuggingFaceHub, ModelScopeHub], ids=["hf", "ms"])
def test_allow_and_ignore_patterns(hub_cls: type[FakeHub], model_files: dict[str, Path], root: Path) -> None:
    hub = hub_cls(token=TOKEN)
    hub.add_repo(REPO, dict(model_files))
    with hub:
        result = run_downloader(hub, root, MC_ALLOW_PATTERNS='["*.json", "1_Pooling/"]',
                                MC_IGNORE_PATTERNS='["tokenizer*"]')
        assert result.code == 0, result.stderr
        manifest = verify_manifest(revision_dir(hub, root))
    got = {f.path for f in manifest.files}
    assert got == {"config.json", "config_sentence_transformers.json", "data_config.json", "modules.json",
                   "sentence_bert_config.json", "special_tokens_map.json", "1_Pooling/config.json"}
    assert manifest.format == "unknown"
    assert "model.safetensors" not in hub.bytes_served


def test_server_errors_then_recovery(hub: FakeHub, root: Path) -> None:
    hub.faults.fail_first = 4
    result = run_downloader(hub, root)
    assert result.code == 0, result.stderr
    assert hub.faults.fail_first == 0
    assert_published(hub, root)


def test_server_errors_that_do_not_stop_exit_75(hf_hub: FakeHub, root: Path) -> None:
    hf_hub.faults.fail_first = 10_000
    result = run_downloader(hf_hub, root, MC_RETRIES="2")
    assert result.code == ExitCode.NETWORK
    assert result.termination is not None and result.termination["reason"] == "Network"
    assert not (root / LOCK_NAME).exists()


def test_connection_reset_mid_file_resumes(hub: FakeHub, root: Path) -> None:
    size = hub.repos[REPO].files["model.safetensors"].size
    hub.faults.reset_after_bytes = 30 << 20
    hub.faults.reset_times = 2
    # One stream per file: the resume of a single stream is under test (ranged parts: test_downloader_ranged).
    result = run_downloader(hub, root, MC_CONNECTIONS_PER_FILE="1")
    assert result.code == 0, result.stderr
    assert hub.faults.reset_times == 0
    assert_published(hub, root)
    # Resumed with Range requests, not restarted (that would re-serve 2 x 30 MiB). The overlap per cut is
    # what the RST discarded from socket buffers plus the client's unfinished read chunk (10 MiB in HF).
    assert size <= hub.bytes_served["model.safetensors"] < size + 2 * (14 << 20)


def test_wrong_token_is_unauthorized(hub: FakeHub, root: Path) -> None:
    hub.token = "tok_the_right_one"
    result = run_downloader(hub, root)
    assert result.code == ExitCode.UNAUTHORIZED, result.stderr
    assert result.termination is not None and result.termination["reason"] == "Unauthorized"
    assert len(json.dumps(result.termination)) <= 4096
    assert not any(p.is_file() for p in root.rglob("*"))  # nothing written, lock released
    assert_no_token(result)


def test_unknown_repo_is_not_found(hub: FakeHub, root: Path) -> None:
    result = run_downloader(hub, root, MC_REPO="acme/no-such-model")
    assert result.code == ExitCode.NOT_FOUND, result.stderr
    assert result.termination is not None and result.termination["reason"] == "NotFound"


def test_unknown_revision_is_not_found(hub: FakeHub, root: Path) -> None:
    result = run_downloader(hub, root, MC_REVISION="v9.9.9")
    assert result.code == ExitCode.NOT_FOUND, result.stderr


def test_wrong_checksum_refetches_once_then_fails(hub: FakeHub, root: Path) -> None:
    f = hub.repos[REPO].files["model.safetensors"]
    hub.faults.wrong_sha256.add(f.path)
    result = run_downloader(hub, root)
    assert result.code == ExitCode.CHECKSUM_MISMATCH, result.stderr
    assert result.termination is not None and result.termination["reason"] == "ChecksumMismatch"
    assert hub.bytes_served[f.path] == 2 * f.size
    d = revision_dir(hub, root)
    assert not (d / ".modelcache" / "manifest.json").exists()
    assert not (d / f.path).exists()


def test_slow_server_logs_progress(hf_hub: FakeHub, root: Path) -> None:
    hf_hub.faults.bytes_per_second = 40 << 20
    result = run_downloader(hf_hub, root, MC_PROGRESS_INTERVAL="0.5", MC_CONNECTIONS_PER_FILE="1")
    assert result.code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "Downloading" in line and "ETA" in line]
    assert len(lines) >= 2, result.stderr
    assert "MiB/s" in lines[0] and "%" in lines[0]


@pytest.mark.parametrize("hub_cls", [HuggingFaceHub, ModelScopeHub], ids=["hf", "ms"])
def test_kill_9_then_resume_fetches_only_what_is_missing(hub_cls: type[FakeHub], model_files: dict[str, Path],
                                                         shards: dict[str, Path], root: Path) -> None:
    hub = hub_cls(token=TOKEN)
    hub.add_repo(REPO, {**model_files, **shards})
    repo = hub.repos[REPO]
    big = sum(f.size for f in repo.files.values())
    with hub:
        hub.faults.bytes_per_second = 8 << 20
        proc = spawn(hub, root)
        deadline = time.monotonic() + 60
        while sum(hub.bytes_served.values()) < big // 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        d = root / repo.sha
        assert not (d / ".modelcache" / "manifest.json").exists()

        # Both hubs write each file in its final place: no `.incomplete` to rename later.
        assert not list(d.rglob("*.incomplete"))
        before = {p: (d / p).stat().st_size if (d / p).is_file() else 0 for p in repo.files}
        assert 0 < sum(before.values()) < big
        assert any(0 < before[p] < repo.files[p].size for p in shards)  # a partial shard to resume
        hub.wait_bodies_done()
        served_first = dict(hub.bytes_served)
        hub.faults.bytes_per_second = None
        # The killed writer's heartbeat is fresh: the new run waits for it to go stale, then takes over.
        result = run_downloader(hub, root, MC_LOCK_STALE_SECONDS="2", MC_LOCK_WAIT_SECONDS="10")
        assert result.code == 0, result.stderr
        assert "stale lock" in result.stderr
        assert_published(hub, root)
        for path, f in repo.files.items():
            assert hub.bytes_served[path] - served_first.get(path, 0) == f.size - before[path], path


def write_lock(root: Path, age: float) -> Path:
    lock = root / LOCK_NAME
    lock.write_text(json.dumps({"holder": "other-pod", "pid": 4242, "job": "other-job",
                                "token": "abc", "heartbeat": time.time() - age}))
    return lock


def test_live_lock_is_respected(hf_hub: FakeHub, root: Path) -> None:
    lock = write_lock(root, age=1)
    content = lock.read_text()
    result = run_downloader(hf_hub, root)
    assert result.code == ExitCode.LOCK_HELD, result.stderr
    assert result.termination is not None and "other-pod" in result.termination["message"]
    assert lock.read_text() == content
    assert not hf_hub.bytes_served


def test_stale_lock_is_taken_over(hf_hub: FakeHub, root: Path) -> None:
    write_lock(root, age=3600)
    result = run_downloader(hf_hub, root)
    assert result.code == 0, result.stderr
    assert not (root / LOCK_NAME).exists()
    assert_published(hf_hub, root)


def test_insufficient_space_fails_before_downloading(hub: FakeHub, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)], check=True)
    try:
        root = small / "volume"
        root.mkdir()
        result = run_downloader(hub, root)
        assert result.code == ExitCode.INSUFFICIENT_SPACE, result.stderr
        assert result.termination is not None
        assert result.termination["reason"] == "InsufficientSpace"
        assert "needs 87" in result.termination["message"] and "has 16" in result.termination["message"]
        assert "model.safetensors" not in hub.bytes_served
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil", "dir\\evil.txt", "a/./b", ".modelcache/x"])
def test_unsafe_names_are_refused(hub: FakeHub, root: Path, name: str) -> None:
    hub.faults.unsafe_names = [name]
    result = run_downloader(hub, root)
    assert result.code == ExitCode.UNSAFE_FILE_NAME, result.stderr
    assert not hub.bytes_served
    assert not (root.parent / "escape.txt").exists()


def test_symlink_on_the_volume_is_refused(hf_hub: FakeHub, root: Path, tmp_path: Path) -> None:
    d = revision_dir(hf_hub, root)
    d.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    os.symlink(outside, d / "config.json")
    result = run_downloader(hf_hub, root)
    assert result.code == ExitCode.UNSAFE_FILE_NAME, result.stderr
    assert outside.read_text() == "{}"
    assert not (d / ".modelcache" / "manifest.json").exists()


def test_broken_manifest_is_repaired(hf_hub: FakeHub, root: Path) -> None:
    assert run_downloader(hf_hub, root).code == 0
    d = revision_dir(hf_hub, root)
    (d / "vocab.txt").write_text("truncated")
    served = dict(hf_hub.bytes_served)
    result = run_downloader(hf_hub, root)
    assert result.code == 0, result.stderr
    assert_published(hf_hub, root)
    assert hf_hub.bytes_served["vocab.txt"] == 2 * served["vocab.txt"]
    assert hf_hub.bytes_served["model.safetensors"] == served["model.safetensors"]
