"""Shared fixtures-by-function for the prewarm tests: hostile file names, junk next to the weights, a PATH
without python3, and a check for readers left behind."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
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
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}

# prewarm.py runs on the serving image's python3 and claims 3.8+ (older ones get prewarm.sh).
OLDEST_PYTHON = (3, 8)

SH_TOOLS = [
    "sh", "find", "xargs", "cat", "date", "sleep", "tr", "wc", "grep", "mktemp", "rm", "timeout", "true", "stat",
]


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


def processes_touching(path: Path) -> list[str]:
    """'pid cmdline' of every process but an s3fs daemon with a file open under path or path in its
    command line: after a prewarm returns, any such process is a reader it left behind."""
    prefix = str(path)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            targets = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if cmdline.startswith("s3fs "):  # the mount's own daemon
            continue
        if prefix in cmdline or any(t.startswith(prefix) for t in targets):
            found.append(f"{proc.name} {cmdline}")
    return found


def wait_until_gone(path: Path, seconds: float = 3.0) -> list[str]:
    """processes_touching(path) once it is empty or seconds have passed (SIGKILL takes a moment)."""
    deadline = time.monotonic() + seconds
    while (left := processes_touching(path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def make_junk_folder(root: Path) -> list[Path]:
    """Next to the weight shards: a 2 TiB sparse file (as some tools pre-allocate), a FIFO, a
    character device reading endless zeros, a dangling link, a link out of the folder,
    and a directory link loop. Returns the paths that are not shards."""
    sparse = root / "preallocated.bin"
    with open(sparse, "wb") as f:
        f.truncate(2 << 40)
    fifo = root / "pipe.safetensors"
    os.mkfifo(fifo)
    zero = root / "zeros.safetensors"
    os.mknod(zero, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    (root / "dangling.safetensors").symlink_to(root / "nowhere")
    (root / "outside.safetensors").symlink_to("/etc/hostname")
    (root / "loop").symlink_to(root)
    return [sparse, fifo, zero, root / "dangling.safetensors", root / "outside.safetensors", root / "loop"]


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[tuple[Path, str]]:
    """A fresh memory cgroup limited to limit bytes (v2 memory.max where the memory controller is
    on the unified hierarchy, else v1 memory.limit_in_bytes). Yields (its directory, the file a
    pid is written to to join it). Needs root; fails, never skips, where it cannot be made."""
    v2_root = Path("/sys/fs/cgroup")
    name = f"prewarm-test-{os.getpid()}-{time.monotonic_ns()}"
    if "memory" in _read(v2_root / "cgroup.controllers").split():
        group = v2_root / name
        group.mkdir()
        (group / "memory.max").write_text(str(limit))
        (group / "memory.swap.max").write_text("0")
    else:
        v1 = v2_root / "memory"
        assert (v1 / "memory.limit_in_bytes").exists(), "no memory cgroup (v1 or v2) on this machine"
        group = v1 / name
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
    try:
        yield group, str(group / "cgroup.procs")
    finally:
        deadline = time.monotonic() + 10
        while _read(group / "cgroup.procs").strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        group.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def size_of(text: str) -> float:
    """Bytes of a size as the summary line prints it (prewarm_report.human): 12.0MiB, 0B."""
    m = re.fullmatch(r"([\d.]+)(B|KiB|MiB|GiB)", text)
    assert m, text
    return float(m.group(1)) * UNITS[m.group(2)]


def oldest_python() -> str:
    """An interpreter of the oldest Python prewarm.py supports: a pyenv build (~/.pyenv/versions/3.8.*),
    else python3.8 on PATH (a pyenv shim there fails unless 3.8 is selected). Fails, never skips,
    where there is none."""
    name = "python{}.{}".format(*OLDEST_PYTHON)
    builds = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/{}.{}.*/bin/python3".format(*OLDEST_PYTHON))))
    found = builds[-1] if builds else shutil.which(name)
    assert found, f"{name} not found (in ~/.pyenv/versions or on PATH): prewarm.py must be tested on it"
    probe = subprocess.run([found, "-I", "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                           text=True, check=False)
    assert probe.returncode == 0, f"{found} does not run: {probe.stderr.strip()}"
    version = probe.stdout.strip()
    assert version == str(OLDEST_PYTHON), f"{found} is Python {version}, not {OLDEST_PYTHON}"
    return found
