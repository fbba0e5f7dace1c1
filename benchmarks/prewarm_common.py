"""What the prewarm benchmarks share: the seed's hook, the pod's own tools and PATH, the machine line,
and appending a section to BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from modelcache_operator.prewarm.prewarm import install

SEED_HOOK = """find "$MODEL_DIR" -type f -print0 | xargs -0 -I {} -P 4 sh -c 'cat "{}" > /dev/null'"""
MiB = 1 << 20
GiB = 1 << 30


def pod_tools(workdir: Path) -> tuple[Path, dict[str, str]]:
    """The pod's tools dir (filled by `modelcache-prewarm install`) and an environment whose PATH has
    python3 as this interpreter, as in a serving image (no pyenv shim, which costs 0.1 s a start)."""
    tools = workdir / "tools"
    install(str(tools))
    pybin = workdir / "pybin"
    pybin.mkdir(parents=True, exist_ok=True)
    if not (pybin / "python3").exists():
        (pybin / "python3").symlink_to(sys.executable)
    return tools, {**os.environ, "PATH": f"{pybin}:/usr/bin:/bin"}


def sh(cmd: str) -> str:
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=False).stdout.strip()


def machine(workdir: Path) -> str:
    """Cores, memory, kernel, load at the end, the disk under workdir, Python."""
    return (f"{sh('nproc')} cores, {sh('free -h | grep Mem')}, kernel {platform.release()}; load at the end: "
            f"`{sh('uptime')}`; disk: `{sh(f'df -hT {workdir} | tail -1')}`; Python {platform.python_version()}")


def append_section(out: Path, lines: list[str]) -> None:
    """Appends lines as a section of out (a blank line before it) and prints it."""
    text = "\n".join(lines) + "\n"
    with open(out, "a", encoding="utf-8") as f:
        f.write(("\n" if out.exists() and out.stat().st_size else "") + text)
    print(text)
