"""hack/system-packages.sh against dpkg's real status database: silent when every package is installed, and
for a user who is not root, the one apt-get command naming exactly what is missing, without running it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "system-packages.sh"
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A folder the unprivileged user can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="mc-dpkg-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _admindir_without(parent: Path, *removed: str) -> Path:
    """A copy of dpkg's status database with the stanzas of `removed` taken out."""
    stanzas = Path("/var/lib/dpkg/status").read_text().split("\n\n")
    kept = [s for s in stanzas if not any(s.startswith(f"Package: {name}\n") for name in removed)]
    (parent / "status").write_text("\n\n".join(kept))
    (parent / "status").chmod(0o644)
    return parent


def _run_as_nobody(admindir: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which("setpriv"), "setpriv missing (util-linux)"
    env = {**os.environ, "DPKG_ADMINDIR": str(admindir)}
    return subprocess.run([*NOBODY, "bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_all_packages_present_is_silent(readable_dir: Path) -> None:
    result = _run_as_nobody(_admindir_without(readable_dir))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_missing_packages_as_a_user_print_the_one_command_and_fail(readable_dir: Path) -> None:
    result = _run_as_nobody(_admindir_without(readable_dir, "runc", "buildah"))
    assert result.returncode == 1
    assert "missing Debian packages: runc buildah" in result.stderr
    assert "apt-get update && apt-get install -y --no-install-recommends runc buildah" in result.stderr
