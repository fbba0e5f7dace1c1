"""How many bytes prewarm may pull into the page cache: no more than the container can keep.

Page cache is charged to the cgroup of the process that first reads it, so reading past the
container's memory limit makes the kernel reclaim the container's own oldest pages, i.e. the
ones prewarm warmed first. The budget is the smaller of (memory limit - usage - headroom) and
(MemAvailable - reserve). cgroup v2 (memory.max, memory.current) and v1 (memory.limit_in_bytes,
memory.usage_in_bytes) are both read. Stdlib-only and self-contained like prewarm.py.
"""

from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"
# v1 reports "no limit" as a page-rounded LONG_MAX.
UNLIMITED = 1 << 60
MiB = 1 << 20


class Budget:
    """bytes: how much may be read (None: unbounded); source: what bound it; detail: the figures."""

    def __init__(self, nbytes: int | None, source: str, detail: str) -> None:
        self.bytes = nbytes
        self.source = source
        self.detail = detail


def default_headroom(limit: int) -> int:
    """Room left for the server's own memory inside the container: 10% of its limit, >= 64 MiB."""
    return max(64 * MiB, limit // 10)


def default_reserve(mem_total: int) -> int:
    """Memory left free on the node: 5% of it, >= 256 MiB."""
    return max(256 * MiB, mem_total // 20)


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        with open(proc_cgroup, encoding="utf-8", errors="replace") as f:
            for line in f:
                hier, _, rest = line.rstrip("\n").partition(":")
                controllers, _, path = rest.partition(":")
                if hier == "0" and controllers == "":
                    v2 = path
                elif "memory" in controllers.split(","):
                    v1 = path
    except OSError:
        pass
    return v2, v1


def _candidates(mount: str, path: str | None) -> list[str]:
    """This cgroup's directory under mount, then mount itself: inside a container the mount is
    the container's own cgroup (a cgroup namespace, or runc bind-mounting it there on v1)."""
    out = []
    if path and path != "/":
        out.append(os.path.join(mount, path.lstrip("/")))
    out.append(mount)
    return [d for d in out if os.path.isdir(d)]


def _v2_limit(directory: str, root: str) -> int:
    """Smallest memory.max from directory up to the mount root (a parent's limit binds too)."""
    limit = UNLIMITED
    d, root = os.path.normpath(directory), os.path.normpath(root)
    while d.startswith(root):
        value = _read_int(os.path.join(d, "memory.max"))
        if value is not None:
            limit = min(limit, value)
        if d == root:
            break
        d = os.path.dirname(d)
    return limit


def _v1_limit(directory: str) -> int:
    limit = _read_int(os.path.join(directory, "memory.limit_in_bytes")) or UNLIMITED
    try:
        with open(os.path.join(directory, "memory.stat"), encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "hierarchical_memory_limit":
                    limit = min(limit, int(value))
    except (OSError, ValueError):
        pass
    return limit


def cgroup_memory(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> tuple[int, int] | None:
    """(limit, usage) of this process's memory cgroup, or None if it has no limit or none is found."""
    v2, v1 = _cgroup_paths(proc_cgroup)
    for d in _candidates(root, v2) if v2 is not None else []:
        usage = _read_int(os.path.join(d, "memory.current"))
        if usage is not None:
            limit = _v2_limit(d, root)
            return (limit, usage) if limit < UNLIMITED else None
    for d in _candidates(os.path.join(root, "memory"), v1) if v1 is not None else []:
        usage = _read_int(os.path.join(d, "memory.usage_in_bytes"))
        if usage is not None:
            limit = _v1_limit(d)
            return (limit, usage) if limit < UNLIMITED else None
    return None


def meminfo(path: str = "/proc/meminfo") -> tuple[int, int] | None:
    """(MemTotal, MemAvailable) in bytes, or None."""
    found: dict[str, int] = {}
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    found[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    if len(found) < 2:
        return None
    return found["MemTotal"], found["MemAvailable"]


def memory_budget(
    headroom: int | None = None, reserve: int | None = None,
    cgroup: tuple[int, int] | None = None, node: tuple[int, int] | None = None,
) -> Budget:
    """The budget from the cgroup's (limit, usage) and the node's (MemTotal, MemAvailable);
    headroom and reserve default to default_headroom(limit) and default_reserve(MemTotal)."""
    rooms: list[tuple[int, str, str]] = []
    if cgroup is not None:
        limit, usage = cgroup
        head = default_headroom(limit) if headroom is None else headroom
        rooms.append((limit - usage - head, "cgroup", f"limit={limit} usage={usage} headroom={head}"))
    if node is not None:
        total, available = node
        keep = default_reserve(total) if reserve is None else reserve
        rooms.append((available - keep, "node", f"MemAvailable={available} reserve={keep}"))
    if not rooms:
        return Budget(None, "none", "no memory limit or MemAvailable found")
    room, source, _ = min(rooms)
    return Budget(max(0, room), source, "; ".join(f"{s}: {d}" for _, s, d in rooms))


def select_within(costs: list[int], budget: int | None) -> tuple[list[bool], int]:
    """Greedy in priority order: each item is taken if its cost still fits. Returns (taken per
    item, bytes left out). A big item that does not fit does not stop smaller later ones."""
    if budget is None:
        return [True] * len(costs), 0
    left = budget
    taken: list[bool] = []
    skipped = 0
    for cost in costs:
        fits = cost <= left
        taken.append(fits)
        if fits:
            left -= cost
        else:
            skipped += cost
    return taken, skipped
