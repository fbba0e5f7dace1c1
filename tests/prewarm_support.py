"""Shared fixtures-by-function for the prewarm tests: hostile file names and a PATH without python3."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CANARY = "pwned"
# Each would create ./pwned (cwd is the canary dir) if a shell ever evaluated it.
EVIL_NAMES = [
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"a;touch {CANARY};b",
    f"x' ; touch {CANARY} #",
    f'x" ; touch {CANARY} #',
    f"new\nline; touch {CANARY}",
    f"| touch {CANARY}",
    f"&& touch {CANARY}",
    "with space.bin",
    "-rf",
    "--dir",
    "*",
    "$HOME",
    "ünïcødé-模型.safetensors",
]
SH_TOOLS = ["sh", "find", "xargs", "cat", "date", "sleep", "tr", "wc", "grep", "mktemp", "rm", "timeout", "true"]


def make_evil_tree(root: Path, size: int = 64 << 10) -> list[Path]:
    """A model dir, itself hostile-named, holding hostile-named files; returns the files."""
    files = []
    for i, name in enumerate(EVIL_NAMES):
        p = root / name
        p.write_bytes(bytes([i + 1]) * size)
        files.append(p)
    return files


def sh_only_path(bin_dir: Path) -> str:
    """A PATH holding just the POSIX tools the sh fallback uses (no python3)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in SH_TOOLS:
        real = shutil.which(tool)
        assert real, f"{tool} missing"
        link = bin_dir / tool
        if not link.exists():
            link.symlink_to(real)
    assert shutil.which("python3", path=str(bin_dir)) is None
    return str(bin_dir)


def env_with_path(path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREWARM_", "MODEL_DIR"))}
    env["PATH"] = path
    return env
