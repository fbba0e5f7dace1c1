"""The ossfs-rules test file system enforces what it claims (two mounts of one bucket are two clients)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ossfs_rules import OssfsRulesMount


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    with OssfsRulesMount(tmp_path / "bucket", tmp_path / "a") as a, \
            OssfsRulesMount(tmp_path / "bucket", tmp_path / "b") as b:
        yield a.mountpoint, b.mountpoint


def test_a_new_file_is_visible_to_other_mounts_only_at_close(mounts: tuple[Path, Path]) -> None:
    a, b = mounts
    with (a / "f").open("wb") as f:
        f.write(b"hello")
        f.flush()
        assert (a / "f").exists()
        assert not (b / "f").exists()
    assert (b / "f").read_bytes() == b"hello"


def test_writes_are_sequential_and_append_only(mounts: tuple[Path, Path]) -> None:
    a, _ = mounts
    (a / "f").write_bytes(b"0123456789")
    for mode in ("r+b", "ab"):
        with pytest.raises(PermissionError):
            (a / "f").open(mode)
    fd = os.open(a / "g", os.O_CREAT | os.O_WRONLY)
    try:
        os.write(fd, b"abc")
        with pytest.raises(OSError, match="Invalid argument"):
            os.pwrite(fd, b"x", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 1)
    finally:
        os.close(fd)
    (a / "f").write_bytes(b"new")  # replacing a whole object (O_TRUNC) is allowed
    assert (a / "f").read_bytes() == b"new"


def test_append_mount_continues_an_existing_file(tmp_path: Path) -> None:
    with OssfsRulesMount(tmp_path / "bucket", tmp_path / "m", append=True) as m:
        (m.mountpoint / "f").write_bytes(b"abc")
        with (m.mountpoint / "f").open("ab") as f:
            f.write(b"def")
        assert (m.mountpoint / "f").read_bytes() == b"abcdef"
        assert [e["appendedFrom"] for e in m.events("upload")] == [0, 3]


def test_rename_is_not_atomic(mounts: tuple[Path, Path]) -> None:
    a, b = mounts
    (a / "src").write_bytes(b"x" * 100)
    (a / "dst").write_bytes(b"old")
    os.replace(a / "src", a / "dst")
    assert (b / "dst").read_bytes() == b"x" * 100 and not (b / "src").exists()
    with pytest.raises(OSError, match="not supported"):
        os.mkdir(a / "d")
        os.rename(a / "d", a / "e")


def test_no_exclusion_across_mounts(mounts: tuple[Path, Path]) -> None:
    a, b = mounts
    fds = [os.open(m / "lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY) for m in (a, b)]  # both "win"
    for fd in fds:
        os.close(fd)
    with (a / "lock").open("rb") as fa, (b / "lock").open("rb") as fb:
        fcntl.flock(fa, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no conflict: each mount locks alone
        with pytest.raises(BlockingIOError), (a / "lock").open("rb") as again:
            fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)  # within one mount, flock still works
