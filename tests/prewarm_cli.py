"""Running prewarm.py and prewarm.sh as the hook runs them, and reading their summary lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from modelcache_operator.prewarm import prewarm as pw
from tests.prewarm_support import env_with_path, sh_only_path
from tests.residency import evict, resident_fraction

PROGRAM = Path(pw.__file__)
FALLBACK = PROGRAM.with_name("prewarm.sh")
SUMMARY = re.compile(
    r"^modelcache-prewarm: files=(?P<files>\d+) bytes=(?P<bytes>\S+) warmed=(?P<warmed>\S+) "
    r"in (?P<secs>\d+\.\d)s \(\S+/s\) resident=(?P<resident>\d+\.\d%|n/a\([a-z-]+\)) "
    r"budget=(?P<budget>none|\S+\((?:cgroup|node)\)) over_budget=(?P<over_budget>\S+) "
    r"skipped=(?P<skipped>\d+) errors=(?P<errors>\d+) timeout=(?P<timeout>true|false)$",
    re.M,
)
# Independent residency checks allow a few percent: these VMs run DAMON proactive reclaim
# (pageout of cold unmapped file pages), which can take freshly read pages within seconds.
WARM = 0.95


def run_python(*args: str, cwd: Path | None = None, timeout: float = 120) -> tuple[re.Match[str], float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(PROGRAM), "warm", *args],
        cwd=cwd, env=env_with_path(os.environ["PATH"]), capture_output=True, text=True, timeout=timeout,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    m = SUMMARY.search(proc.stdout)
    assert m, proc.stdout
    return m, elapsed


def run_sh(tmp_path: Path, *args: str, cwd: Path | None = None, timeout: float = 120) -> tuple[str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        ["sh", str(FALLBACK), *args], cwd=cwd, env=env_with_path(sh_only_path(tmp_path / "shbin")),
        capture_output=True, text=True, timeout=timeout,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"modelcache-prewarm: mode=sh files=(\d+|\?) in \d+s resident=n/a\([\w,-]+\) sparse=\d+ errors=\d+ "
        r"timeout=(true|false)", line
    ), line
    return line, elapsed


def cold(paths: list[Path]) -> None:
    evict(paths)
    assert resident_fraction(paths) < 0.05, "eviction failed: is the tmp dir on tmpfs?"


def open_files(pid: int) -> set[str]:
    """Paths open in pid and its children."""
    out: set[str] = set()
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            out.add(os.path.realpath(f"/proc/{pid}/fd/{fd}"))
    except (FileNotFoundError, ProcessLookupError):
        return out
    for child in children:
        out |= open_files(int(child))
    return out
