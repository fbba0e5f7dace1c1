"""prewarm_budget: the memory budget from cgroup v1/v2 files and /proc/meminfo, and the greedy pick."""

from __future__ import annotations

from pathlib import Path

from modelcache_operator.prewarm import prewarm_budget as pb

MiB = 1 << 20
GiB = 1 << 30


def test_budget_is_the_smaller_room_and_says_which() -> None:
    b = pb.memory_budget(headroom=100 * MiB, reserve=1 * GiB, cgroup=(4 * GiB, 1 * GiB), node=(64 * GiB, 10 * GiB))
    assert (b.bytes, b.source) == (3 * GiB - 100 * MiB, "cgroup")
    assert "limit=4294967296" in b.detail and "MemAvailable=10737418240" in b.detail
    b = pb.memory_budget(headroom=0, reserve=1 * GiB, cgroup=(40 * GiB, 0), node=(64 * GiB, 3 * GiB))
    assert (b.bytes, b.source) == (2 * GiB, "node")


def test_budget_defaults_and_never_negative() -> None:
    b = pb.memory_budget(cgroup=(2 * GiB, 0), node=None)
    assert b.bytes == 2 * GiB - pb.default_headroom(2 * GiB) == 2 * GiB - 2 * GiB // 10
    assert pb.default_headroom(100 * MiB) == 64 * MiB
    assert pb.default_reserve(24 * GiB) == 24 * GiB // 20
    assert pb.memory_budget(headroom=0, cgroup=(1 * GiB, 2 * GiB)).bytes == 0
    unbounded = pb.memory_budget()
    assert (unbounded.bytes, unbounded.source) == (None, "none")


def test_select_within_keeps_priority_order_and_lets_smaller_later_items_in() -> None:
    assert pb.select_within([5, 5, 5], 12) == ([True, True, False], 5)
    assert pb.select_within([10, 3, 1], 4) == ([False, True, True], 10)
    assert pb.select_within([7, 7], None) == ([True, True], 0)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_takes_the_smallest_limit_up_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _write(root / "kubepods" / "memory.max", f"{3 * GiB}\n")
    _write(root / "kubepods" / "pod1" / "memory.max", "max\n")
    _write(root / "kubepods" / "pod1" / "memory.current", f"{1 * GiB}\n")
    proc = tmp_path / "proc-cgroup"
    _write(proc, "0::/kubepods/pod1\n")
    assert pb.cgroup_memory(str(root), str(proc)) == (3 * GiB, 1 * GiB)
    # Inside a container's cgroup namespace the path is / and the mount is the container's own.
    _write(root / "memory.max", f"{2 * GiB}\n")
    _write(root / "memory.current", "5\n")
    _write(proc, "0::/\n")
    assert pb.cgroup_memory(str(root), str(proc)) == (2 * GiB, 5)


def test_cgroup_v1_uses_the_hierarchical_limit_and_unlimited_is_none(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    group = root / "memory" / "kubepods" / "pod1"
    _write(group / "memory.limit_in_bytes", "9223372036854771712\n")
    _write(group / "memory.usage_in_bytes", f"{100 * MiB}\n")
    _write(group / "memory.stat", f"cache 1\nhierarchical_memory_limit {1 * GiB}\n")
    proc = tmp_path / "proc-cgroup"
    _write(proc, "4:memory:/kubepods/pod1\n1:cpu:/\n0::/\n")
    assert pb.cgroup_memory(str(root), str(proc)) == (1 * GiB, 100 * MiB)
    _write(group / "memory.stat", "cache 1\n")
    assert pb.cgroup_memory(str(root), str(proc)) is None


def test_meminfo(tmp_path: Path) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24731184 kB\nMemFree:         3811164 kB\nMemAvailable:   23593064 kB\n")
    assert pb.meminfo(str(info)) == (24731184 * 1024, 23593064 * 1024)
    assert pb.meminfo(str(tmp_path / "absent")) is None
