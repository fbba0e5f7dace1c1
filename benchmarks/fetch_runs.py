"""What the download benchmarks share: a fetcher run as its own subprocess, measured, and the results table.

Time is wall clock from spawn to exit; CPU and peak RSS are that child's own rusage (os.wait4), not the max
over all children.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import modelcache_operator

MIB = 1 << 20


@dataclass
class Run:
    seconds: float
    cpu: float  # user + sys of the child
    peak_rss: int  # bytes


def measure(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - t0
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed ({status}):\n{err[-4000:]}")
    return Run(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


def downloader(url: str, repo: str, root: Path, **settings: str) -> Run:
    """`python -m modelcache_operator.downloader` as the Job runs it, anonymous, with `MC_*` settings."""
    env = {**os.environ, "MC_HUB": "huggingface", "MC_REPO": repo, "MC_ROOT": str(root), "MC_ENDPOINT": url,
           "MC_REPORT": "none", "HF_HUB_DISABLE_XET": "1", "MC_TERMINATION_LOG": str(root.parent / "term"),
           "MC_LOCK_WAIT_SECONDS": "0", **settings}
    env.pop("MC_HUB_TOKEN", None)
    compile_ours()
    return measure([sys.executable, "-m", "modelcache_operator.downloader"], env)


def compile_ours() -> None:
    """Bytecode for this package, before the timed run: the image installs a wheel, whose modules pip compiles,
    while the editable install here under PYTHONDONTWRITEBYTECODE would compile them again in every run."""
    compileall.compile_dir(Path(modelcache_operator.__file__).parent, quiet=1)


def print_table(runs: dict[str, list[Run]], total_bytes: int, labels: dict[str, str] | None = None) -> dict[str, float]:
    """The markdown table of median seconds, MiB/s and CPU, and max peak RSS; returns the median seconds."""
    print("| fetcher | seconds | MiB/s | CPU s (user+sys) | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    med: dict[str, float] = {}
    for name, rs in runs.items():
        med[name] = statistics.median(r.seconds for r in rs)
        cpu = statistics.median(r.cpu for r in rs)
        rss = max(r.peak_rss for r in rs)
        print(f"| {(labels or {}).get(name, name)} | {med[name]:.2f} | {total_bytes / med[name] / MIB:.0f} "
              f"| {cpu:.2f} | {rss / MIB:.0f} MiB |")
    return med
