"""The image's Python payload, built without a Docker engine: the builder stage's build context is assembled
from the Dockerfile's own COPY lines, and hack/install-wheel.sh (the script the Dockerfile runs) builds and
installs the wheel into a fresh venv. Then every entry point the operator, its Jobs and its init
containers use must start from that venv, outside the source tree."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from modelcache_operator.prewarm.prewarm import SIBLINGS

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def builder_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY in the builder stage, relative to WORKDIR /src."""
    copies: list[tuple[list[str], str]] = []
    stage = None
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "FROM":
            stage = words[-1] if "AS" in words else None
        elif words[0] == "COPY" and stage == "builder":
            assert not any(w.startswith("--") for w in words[1:]), f"unsupported COPY flag: {line}"
            copies.append((words[1:-1], words[-1]))
    assert copies, "the Dockerfile has no COPY in a stage named builder"
    return copies


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = tmp_path_factory.mktemp("context")
    for sources, destination in builder_copies():
        target = context / destination
        for source in sources:
            path = REPO / source
            assert path.exists(), f"the Dockerfile copies {source}, which does not exist in the repository"
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                into = target / path.name if destination.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)
    venv = tmp_path_factory.mktemp("image") / "venv"
    # The same RUN as the Dockerfile's builder stage, with this interpreter instead of the base image's.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(["sh", "hack/install-wheel.sh", str(context), str(venv)], cwd=context,
                            env={**env, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"install-wheel.sh failed:\n{result.stdout}\n{result.stderr}"
    return venv


def run_tool(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A clean environment and a cwd outside the repository: only the installed wheel can answer.
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [
    ["modelcache-operator", "--help"],
    ["modelcache-operator", "run", "--help"],
    ["modelcache-operator", "purge", "--help"],
    ["modelcache-download", "--help"],
    ["modelcache-prewarm", "--help"],
])
def test_entry_point_starts(image_venv: Path, argv: list[str], tmp_path: Path) -> None:
    result = run_tool(image_venv, *argv, cwd=tmp_path)
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    assert "usage:" in result.stdout


def test_the_wheel_is_what_runs(image_venv: Path, tmp_path: Path) -> None:
    result = run_tool(image_venv, "python", "-c",
                      "import modelcache_operator, sys; print(modelcache_operator.__file__, sys.prefix)",
                      cwd=tmp_path)
    location, prefix = result.stdout.split()
    assert Path(location).is_relative_to(image_venv), location
    assert Path(prefix) == image_venv


def test_pip_check_passes_in_the_image_venv(image_venv: Path, tmp_path: Path) -> None:
    """install-wheel.sh runs `pip check` too (so the image build fails); this names the broken requirement."""
    result = run_tool(image_venv, "python", "-m", "pip", "check", "--disable-pip-version-check", cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "No broken requirements found."), result.stdout


def test_prewarm_tools_ship_world_readable(image_venv: Path, tmp_path: Path) -> None:
    """The init container copies the tools (prewarm.py, its modules, prewarm.sh) into pods that run as
    arbitrary UIDs."""
    tools = tmp_path / "tools"
    tools.mkdir()
    result = run_tool(image_venv, "modelcache-prewarm", "install", str(tools), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in tools.iterdir()} == {"prewarm.py", "prewarm.sh", *SIBLINGS}
    installed = list(image_venv.glob("lib/python*/site-packages/modelcache_operator/prewarm/prewarm[._]*"))
    assert {p.name for p in installed} == {"prewarm.py", "prewarm.sh", *SIBLINGS}
    for path in installed:
        assert path.stat().st_mode & stat.S_IROTH, f"{path} is not world-readable"


def test_crd_generator_runs_from_the_wheel(image_venv: Path, tmp_path: Path) -> None:
    result = run_tool(image_venv, "modelcache-operator", "crd", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    files = [REPO / "crds" / f"modelcache.dev_{plural}.yaml" for plural in ("modelstores", "modelcaches",
                                                                            "modeldownloads")]
    assert result.stdout == "---\n".join(f.read_text() for f in files)
