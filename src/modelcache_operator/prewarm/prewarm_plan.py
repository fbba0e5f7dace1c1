"""What one warm run reads, and with which settings: the collected files (prewarm_files), kept in
priority order while their cold bytes fit the memory budget (prewarm_budget), plus the notes the
summary prints about what was left out and why. Stdlib-only like prewarm.py.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing`: see prewarm.py

if TYPE_CHECKING or __package__:
    from modelcache_operator.prewarm.prewarm_budget import cgroup_memory, meminfo, memory_budget, select_within
    from modelcache_operator.prewarm.prewarm_files import Collected, FileEntry, collect_files, data_bytes
    from modelcache_operator.prewarm.prewarm_read import cold_bytes
    from modelcache_operator.prewarm.prewarm_report import Outcome, human
    from modelcache_operator.prewarm.prewarm_residency import Residency
else:  # imported by prewarm.py run as a script, which put this directory on sys.path
    from prewarm_budget import cgroup_memory, meminfo, memory_budget, select_within
    from prewarm_files import Collected, FileEntry, collect_files, data_bytes
    from prewarm_read import cold_bytes
    from prewarm_report import Outcome, human
    from prewarm_residency import Residency

DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 600.0
# Smallest range worth its own handle and stream; below it, splitting costs more than it gains.
DEFAULT_CHUNK = 32 << 20


class Options:
    """warm's settings beyond the folders."""

    def __init__(
        self, *, concurrency: int = DEFAULT_CONCURRENCY, timeout: float = DEFAULT_TIMEOUT,
        chunk_bytes: int = DEFAULT_CHUNK, log_file: str | None = None, container_log: str | None = None,
        headroom: int | None = None, reserve: int | None = None,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.timeout = max(0.1, timeout)
        self.chunk_bytes = chunk_bytes
        self.log_file = log_file
        self.container_log = container_log
        self.headroom = headroom
        self.reserve = reserve


class Plan:
    """The files to read, after the budget, and the outcome so far."""

    def __init__(self, collected: Collected, files: list[FileEntry], outcome: Outcome, notes: list[str]) -> None:
        self.collected = collected
        self.files = files
        self.outcome = outcome
        self.notes = notes


def plan(roots: list[str], opts: Options, res: Residency | None) -> Plan:
    """Collects the files and keeps, in priority order, those whose cold bytes fit the budget."""
    collected = collect_files(roots)
    notes = list(collected.notes)
    o = Outcome()
    o.files = len(collected.files)
    o.total = sum(data_bytes(f) for f in collected.files)
    o.skipped = collected.skipped
    holes = sum(f.size - data_bytes(f) for f in collected.files)
    if holes:
        notes.append(f"holes skipped: {human(holes)} of sparse files is not data")
    if collected.reasons:
        notes.append("not warmed: " + ", ".join(f"{n} {why}" for why, n in sorted(collected.reasons.items())))
    if collected.roots_missing:
        notes.append(f"{collected.roots_missing} of {len(roots)} model folders missing")
    if collected.roots_missing == len(roots):
        o.na_reason = "folder-missing"
    elif not collected.files:
        o.na_reason = "unreadable" if collected.reasons.get("unreadable") else "no-files"
    budget = memory_budget(opts.headroom, opts.reserve, cgroup_memory(), meminfo())
    o.budget, o.budget_source = budget.bytes, budget.source
    files = collected.files
    if budget.bytes is not None and o.total > budget.bytes:
        taken, o.over_budget = select_within([cold_bytes(f, res) for f in files], budget.bytes)
        files = [f for f, keep in zip(files, taken) if keep]  # zip(strict=) is Python 3.10+
        if o.over_budget:
            notes.append(
                f"over budget: {o.files - len(files)} files ({human(o.over_budget)} not yet cached) left cold; "
                f"budget {human(budget.bytes)} from {budget.source} ({budget.detail})")
    return Plan(collected, files, o, notes)
