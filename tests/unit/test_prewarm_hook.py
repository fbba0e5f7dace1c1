"""The hook commands: constant script text, names only as arguments, and real `sh` runs of them
against hostile file names, with and without python3."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelcache_operator.prewarm import hook
from tests.prewarm_support import CANARY, EVIL_NAMES, env_with_path, make_evil_tree, sh_only_path

VENV_BIN = str(Path(sys.executable).parent)


def test_poststart_command_passes_paths_only_as_arguments() -> None:
    dirs = ["/models/$(reboot)", "/models/`id`;x"]
    cmd = hook.poststart_command("/tools'", dirs, 8, 300, "/tools/log")
    assert cmd[:4] == ["/bin/sh", "-c", hook.POSTSTART_SCRIPT, "modelcache-prewarm"]
    assert cmd[4:] == ["/tools'", "8", "300", "/tools/log", "/proc/1/fd/1", *dirs]
    assert "reboot" not in cmd[2] and "/tools" not in cmd[2]


@pytest.mark.parametrize(("dirs", "conc", "timeout"), [([], 4, 10), (["/m"], 0, 10), (["/m"], 4, 0)])
def test_poststart_command_rejects_nonsense(dirs: list[str], conc: int, timeout: int) -> None:
    with pytest.raises(ValueError):
        hook.poststart_command("/tools", dirs, conc, timeout, "/tools/log")


def test_wait_and_install_commands() -> None:
    assert hook.wait_command("/tools/", "/models/m", 600, 0.5) == [
        "python3", "-I", "-S", "/tools/prewarm.py", "wait", "--dir", "/models/m",
        "--timeout", "600", "--interval", "0.5",
    ]
    assert hook.install_command("/tools") == ["modelcache-prewarm", "install", "/tools"]


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    dest = tmp_path / "tools"
    env = env_with_path(f"{VENV_BIN}:/usr/bin:/bin")
    subprocess.run(hook.install_command(str(dest)), check=True, env=env, capture_output=True)
    for name in ("prewarm.py", "prewarm.sh"):
        assert (dest / name).stat().st_mode & 0o777 == 0o755
    return dest


def _python_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "pybin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    return f"{bin_dir}:/usr/bin:/bin"


@pytest.mark.parametrize("with_python", [True, False], ids=["python3", "sh-fallback"])
def test_poststart_hook_with_hostile_names(tmp_path: Path, tools: Path, with_python: bool) -> None:
    model = tmp_path / EVIL_NAMES[0]
    model.mkdir()
    make_evil_tree(model)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    log = tmp_path / "prewarm.log"
    path = _python_path(tmp_path) if with_python else sh_only_path(tmp_path / "shbin")
    container_log = tmp_path / "container.log"  # stands in for /proc/1/fd/1, which always exists
    container_log.touch()
    cmd = hook.poststart_command(str(tools), [str(model), str(tmp_path / "absent")], 4, 20, str(log),
                                 container_log=str(container_log))
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env_with_path(path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 20
    assert not (cwd / CANARY).exists() and not (model / CANARY).exists()
    line = log.read_text().strip().splitlines()[-1]
    assert line in proc.stdout
    assert container_log.read_text() == line + "\n"  # only the summary reaches the container's log
    if with_python:
        assert f"files={len(EVIL_NAMES)} " in line and "errors=0" in line and "mode=sh" not in line
    else:
        assert line.startswith("modelcache-prewarm: mode=sh ")
        assert f"files={len(EVIL_NAMES)} " in line and "errors=0" in line


def test_poststart_hook_exits_0_when_tools_are_missing(tmp_path: Path) -> None:
    cmd = hook.poststart_command(str(tmp_path / "no-tools"), [str(tmp_path)], 4, 5, str(tmp_path / "log"),
                                 container_log="")
    proc = subprocess.run(cmd, env=env_with_path(_python_path(tmp_path)), capture_output=True, timeout=30)
    assert proc.returncode == 0


def test_wait_command_gates_on_a_complete_manifest(tmp_path: Path, tools: Path) -> None:
    model = tmp_path / "m"
    (model / ".modelcache").mkdir(parents=True)
    env = env_with_path(_python_path(tmp_path))

    def run() -> int:
        cmd = hook.wait_command(str(tools), str(model), 1, 0.1)
        return subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode

    assert run() == 1
    (model / ".modelcache" / "manifest.json").write_text('{"files": [')  # still being written
    assert run() == 1
    (model / ".modelcache" / "manifest.json").write_text(json.dumps({"files": []}))
    assert run() == 0
