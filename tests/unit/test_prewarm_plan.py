"""Planner logic of prewarm.py: chunking, manifest parsing, path safety, residency runs, report."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcache_operator.prewarm import prewarm as pw
from modelcache_operator.prewarm import prewarm_files as pf
from modelcache_operator.prewarm import prewarm_plan as plan
from modelcache_operator.prewarm import prewarm_read as rd
from modelcache_operator.prewarm import prewarm_report as report
from modelcache_operator.prewarm import prewarm_residency as residency
from modelcache_operator.prewarm import prewarm_run as run
from modelcache_operator.prewarm.prewarm_files import FileEntry
from modelcache_operator.prewarm.prewarm_read import PAGE, Chunk

SUMMARY = re.compile(
    r"^modelcache-prewarm: files=(\d+) bytes=\S+ warmed=\S+ in \d+\.\ds \(\S+/s\) "
    r"resident=(\d+\.\d%|n/a\([a-z-]+\)) budget=\S+ over_budget=\S+ skipped=(\d+) errors=(\d+) "
    r"timeout=(true|false)$"
)


@given(
    sizes=st.lists(st.integers(0, 10 * PAGE * 64), max_size=6),
    fuse=st.lists(st.booleans(), min_size=6, max_size=6),
    concurrency=st.integers(1, 32),
    min_range=st.integers(1, 3 * PAGE * 16),
)
def test_chunks_tile_each_file_exactly_with_page_aligned_offsets(
    sizes: list[int], fuse: list[bool], concurrency: int, min_range: int
) -> None:
    files = [FileEntry(f"/m/{i}", s, fuse[i]) for i, s in enumerate(sizes)]
    chunks = rd.plan_chunks(files, concurrency, min_range)
    for i, size in enumerate(sizes):
        mine = [c for c in chunks if c.file == i]
        assert sum(c.length for c in mine) == size
        assert [c.offset for c in mine] == sorted(c.offset for c in mine)
        assert all(c.offset % PAGE == 0 and c.length > 0 for c in mine)
        assert all(a.offset + a.length == b.offset for a, b in itertools.pairwise(mine))
        assert len(mine) <= max(1, concurrency)
        assert len(mine) <= 1 or (not fuse[i] and all(c.length >= min_range for c in mine[:-1]))
    # File order is kept, so a timeout leaves the first files complete.
    assert [c.file for c in chunks] == sorted(c.file for c in chunks)


def test_big_file_gets_one_long_range_per_worker_and_small_files_one_each() -> None:
    gib = 1 << 30
    files = [FileEntry("/m/a.gguf", 100 * gib + 5)] + [FileEntry(f"/m/s{i}", 4 << 20) for i in range(3)]
    chunks = rd.plan_chunks(files, 16, 32 << 20)
    big = [c for c in chunks if c.file == 0]
    assert len(big) == 16 and len({c.length for c in big[:-1]}) == 1
    assert big[-1].offset + big[-1].length == 100 * gib + 5
    assert [c for c in chunks if c.file > 0] == [Chunk(i, 0, 4 << 20) for i in (1, 2, 3)]


def test_ranges_share_the_bytes_across_files_and_fuse_files_are_one_stream() -> None:
    mib = 1 << 20
    # 512 MiB + 4 x 128 MiB: 16 workers get ~64 MiB each; on FUSE each file is read whole.
    local = [FileEntry("/m/big", 512 * mib)] + [FileEntry(f"/m/{i}", 128 * mib) for i in range(4)]
    assert len(rd.plan_chunks(local, 16, 32 * mib)) == 16
    fuse = [FileEntry(f.path, f.size, True) for f in local]
    assert rd.plan_chunks(fuse, 16, 1) == [Chunk(i, 0, f.size) for i, f in enumerate(fuse)]


def test_fuse_devices_reads_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "90 22 0:52 / /mnt/s3 ro,nosuid master:3 - fuse.s3fs s3fs ro,user_id=0\n"
        "91 22 0:53 / /mnt/x rw - fuse fuse rw\n"
        "92 22 0:54 / /mnt/y rw - tmpfs tmpfs rw\n"
    )
    assert pf.fuse_devices(str(info)) == {os.makedev(0, 52), os.makedev(0, 53)}
    assert pf.fuse_devices(str(tmp_path / "absent")) == set()


@pytest.mark.parametrize(
    "rel",
    ["/etc/passwd", "../x", "a/../../x", "a/..", "", "a\0b", "..\\x"],
)
def test_safe_join_rejects_escapes(tmp_path: Path, rel: str) -> None:
    assert pf.safe_join(str(tmp_path), rel) is None


def test_safe_join_follows_symlinks_only_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "model"
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / "abc").write_bytes(b"x")
    (root / "inside").symlink_to(root / "blobs" / "abc")
    (tmp_path / "secret").write_bytes(b"s")
    (root / "outside").symlink_to(tmp_path / "secret")
    assert pf.safe_join(str(root), "./blobs//abc") == str(root / "blobs" / "abc")
    assert pf.safe_join(str(root), "inside") == str(root / "inside")
    assert pf.safe_join(str(root), "outside") is None


def test_manifest_paths_counts_rejected_entries(tmp_path: Path) -> None:
    doc = {"files": [
        {"path": "a.safetensors", "size": 1, "sha256": "0"},
        {"path": "sub/b.bin", "size": 1, "sha256": "0"},
        {"path": "../../etc/shadow"},
        {"size": 3},
        "not-an-object",
    ], "revision": "main"}
    paths, rejected = pf.manifest_paths(str(tmp_path), json.dumps(doc))
    assert paths == [str(tmp_path / "a.safetensors"), str(tmp_path / "sub" / "b.bin")]
    assert rejected == 3


@pytest.mark.parametrize("text", ["[]", '{"files": {}}', "{}", "{not json"])
def test_manifest_paths_rejects_non_manifests(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError):
        pf.manifest_paths(str(tmp_path), text)


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / ".modelcache").mkdir()
    (root / "a.bin").write_bytes(b"a" * 10)
    (root / "sub" / "b.bin").write_bytes(b"b" * 20)
    (root / "link.bin").symlink_to(root / "a.bin")  # same inode as a.bin: read once
    (root / ".modelcache" / "state").write_bytes(b"meta")
    os.mkfifo(root / "pipe")


def test_collect_walks_without_manifest(tmp_path: Path) -> None:
    root = tmp_path / "m"
    _tree(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"o" * 30)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "escape.bin").symlink_to(outside / "big")
    found = pf.collect_files([str(root)])
    assert [(f.path, f.size) for f in found.files] == [(str(root / "a.bin"), 10), (str(root / "sub" / "b.bin"), 20)]
    assert found.skipped == 2  # the FIFO and the symlink leaving root
    assert found.reasons == {"not-regular": 2}
    assert found.notes == []


def test_collect_uses_manifest_and_counts_missing(tmp_path: Path) -> None:
    root = tmp_path / "m"
    _tree(root)
    manifest = {"files": [{"path": p} for p in ("sub/b.bin", "gone.bin", "pipe", "../x", "link.bin")]}
    (root / ".modelcache" / "manifest.json").write_text(json.dumps(manifest))
    found = pf.collect_files([str(root)])
    assert [(f.path, f.size) for f in found.files] == [(str(root / "sub" / "b.bin"), 20), (str(root / "link.bin"), 10)]
    assert found.reasons == {"missing": 1, "not-regular": 1, "unsafe-path": 1}


def test_collect_falls_back_to_walk_on_corrupt_manifest(tmp_path: Path) -> None:
    root = tmp_path / "m"
    _tree(root)
    (root / ".modelcache" / "manifest.json").write_text('{"files": [')
    found = pf.collect_files([str(root)])
    assert [f.path for f in found.files] == [str(root / "a.bin"), str(root / "sub" / "b.bin")]
    assert len(found.notes) == 1 and "walking" in found.notes[0]


def test_collect_dedups_across_roots(tmp_path: Path) -> None:
    root = tmp_path / "m"
    _tree(root)
    assert len(pf.collect_files([str(root), str(root / "sub")]).files) == 2


def test_cold_runs_skip_resident_pages_and_merge_small_gaps() -> None:
    gap = residency.MERGE_GAP // PAGE
    vec = bytes([1, 1, 0, 0, 1, 0] + [1] * (gap + 1) + [0, 0])
    base = 64 * PAGE
    length = len(vec) * PAGE - 100  # the last page is partial
    runs = residency.cold_runs(vec, base, length)
    assert runs == [
        (base + 2 * PAGE, 4 * PAGE),  # pages 2..5; the one-page resident hole is re-read
        (base + (7 + gap) * PAGE, 2 * PAGE - 100),
    ]
    assert residency.cold_runs(bytes([1] * 8), 0, 8 * PAGE) == []
    assert residency.cold_runs(bytes([0] * 8), 0, 8 * PAGE) == [(0, 8 * PAGE)]


def test_summary_line_format() -> None:
    o = report.Outcome()
    o.files, o.total, o.warmed, o.elapsed, o.resident = 17, int(15.2 * (1 << 30)), int(15.2 * (1 << 30)), 4.1, 1.0
    o.budget, o.budget_source = 20 << 30, "cgroup"
    line = report.summary(o)
    assert line == (
        "modelcache-prewarm: files=17 bytes=15.2GiB warmed=15.2GiB in 4.1s (3.7GiB/s) "
        "resident=100.0% budget=20.0GiB(cgroup) over_budget=0B skipped=0 errors=0 timeout=false"
    )
    assert SUMMARY.match(line)
    empty = report.Outcome()
    empty.na_reason, empty.timed_out = "folder-missing", True
    assert "resident=n/a(folder-missing) budget=none " in report.summary(empty)
    assert SUMMARY.match(report.summary(empty))
    assert [report.human(n) for n in (0, 1023, 1536, 5 << 20, 2 << 40)] == ["0B", "1023B", "1.5KiB", "5.0MiB", "2.0TiB"]


def test_cli_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DIR", "/models/x")
    monkeypatch.setenv("PREWARM_CONCURRENCY", "7")
    monkeypatch.setenv("PREWARM_TIMEOUT_SECONDS", "42")
    args = pw.parse_args(["warm"])
    assert (args.dirs, args.concurrency, args.timeout) == (["/models/x"], 7, 42.0)
    args = pw.parse_args(["warm", "--dir", "/a", "--dir", "/b", "--concurrency", "3"])
    assert (args.dirs, args.concurrency) == (["/a", "/b"], 3)
    assert pw.parse_args(["wait"]).dir == "/models/x"


def test_warm_never_fails_on_bad_arguments(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_DIR", raising=False)
    assert pw.main(["warm", "--concurrency", "lots"]) == 0
    assert pw.main(["warm"]) == 0
    out = capsys.readouterr().out
    assert "bad arguments" in out and "nothing warmed" in out


def test_warm_in_process_on_missing_dir_reports_and_returns_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log"
    opts = plan.Options(concurrency=4, timeout=5.0, chunk_bytes=1 << 20, log_file=str(log))
    assert run.warm_in_process([str(tmp_path / "absent")], opts) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    m = SUMMARY.match(lines[-1])
    assert m and m.group(1) == "0" and m.group(2) == "n/a(folder-missing)" and m.group(5) == "false"
    assert lines[:-1] == ["modelcache-prewarm: 1 of 1 model folders missing"]
    assert log.read_text().splitlines() == lines


def test_chunks_cover_only_the_data_extents() -> None:
    mib = 1 << 20
    extents = ((0, 4 * mib), (100 * mib, 64 * mib))
    files = [FileEntry("/m/sparse.bin", 1 << 40, False, extents)]
    chunks = rd.plan_chunks(files, 4, 8 * mib)
    assert sum(c.length for c in chunks) == 68 * mib
    for c in chunks:
        assert any(start <= c.offset and c.offset + c.length <= start + n for start, n in extents)
    assert rd.plan_chunks([FileEntry("/m/empty.bin", 1 << 40, False, ())], 4, mib) == []


def test_data_extents_of_a_real_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(1 << 30)
        f.seek(512 << 20)
        f.write(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = pf.data_extents(fd, 1 << 30)
    finally:
        os.close(fd)
    assert extents is not None and len(extents) == 1
    start, length = extents[0]
    assert start <= 512 << 20 < start + length and length <= 1 << 20


@pytest.mark.parametrize("with_manifest", [True, False], ids=["manifest", "walk"])
def test_weights_come_first_each_group_in_manifest_or_walk_order(tmp_path: Path, with_manifest: bool) -> None:
    """What a budget or a timeout cuts off is the end of this list: never a weight before a tokenizer."""
    names = ["config.json", "model-00002-of-00002.safetensors", "train.log", "model.GGUF",
             "model-00001-of-00002.safetensors", "tokenizer.json"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    if with_manifest:
        (tmp_path / ".modelcache").mkdir()
        (tmp_path / pf.MANIFEST).write_text(json.dumps({"files": [{"path": n} for n in names]}))
    order = [os.path.basename(f.path) for f in pf.collect_files([str(tmp_path)]).files]
    if with_manifest:
        assert order == ["model-00002-of-00002.safetensors", "model.GGUF", "model-00001-of-00002.safetensors",
                         "config.json", "train.log", "tokenizer.json"]
    else:  # the walk's order is sorted by name
        assert order == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.GGUF",
                         "config.json", "tokenizer.json", "train.log"]
