"""Fixtures: fake hubs on 127.0.0.1 (never skipped: a hub that cannot start fails the test) and a runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hubs import FakeHub, make_shards, package_model_files
from tests.hubs.huggingface import HuggingFaceHub
from tests.hubs.modelscope import ModelScopeHub

TOKEN = "tok_Sup3rSecretValue_9f8e7d"
REPO = "acme/minilm"
HUB_NAMES = {HuggingFaceHub: "huggingface", ModelScopeHub: "modelscope"}


@dataclass
class Result:
    code: int
    stderr: str
    termination: dict[str, Any] | None
    root: Path

    @property
    def all_output(self) -> str:
        return self.stderr + json.dumps(self.termination)


def downloader_env(hub: FakeHub, root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MC_", "HF_", "MODELSCOPE_"))}
    env.update({
        "MC_HUB": HUB_NAMES[type(hub)], "MC_REPO": REPO, "MC_ROOT": str(root), "MC_ENDPOINT": hub.url,
        "MC_HUB_TOKEN": TOKEN, "MC_TERMINATION_LOG": str(root.parent / "termination-log"),
        "MC_REPORT": "none",
        "MC_RETRY_BACKOFF_SECONDS": "0.1", "MC_LOCK_WAIT_SECONDS": "0", "MC_MAX_WORKERS": "4",
        "HF_HUB_DISABLE_XET": "1", "HOME": str(root.parent / "home"),
    })
    env.update(extra)
    return env


def spawn(hub: FakeHub, root: Path, **extra: str) -> subprocess.Popen[str]:
    (root.parent / "termination-log").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "-m", "modelcache_operator.downloader"],
                            env=downloader_env(hub, root, **extra), stderr=subprocess.PIPE, text=True)


def run_downloader(hub: FakeHub, root: Path, timeout: float = 180, **extra: str) -> Result:
    proc = spawn(hub, root, **extra)
    _, stderr = proc.communicate(timeout=timeout)
    term_path = root.parent / "termination-log"
    term = json.loads(term_path.read_text()) if term_path.exists() else None
    return Result(proc.returncode, stderr, term, root)


@pytest.fixture(scope="session")
def model_files() -> dict[str, Path]:
    return package_model_files()


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two generated 32 MiB shards: big enough to interrupt, small enough to keep the suite fast."""
    return make_shards(tmp_path_factory.mktemp("shards"), count=2, size=32 << 20)


def _started(hub: FakeHub) -> Iterator[FakeHub]:
    hub.start()  # raises HubStartError: the test fails, it is never skipped
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture(params=[HuggingFaceHub, ModelScopeHub], ids=["hf", "ms"])
def hub(request: pytest.FixtureRequest, model_files: dict[str, Path]) -> Iterator[FakeHub]:
    """Each hub type with the real MiniLM model under REPO, token required."""
    h: FakeHub = request.param(token=TOKEN)
    h.add_repo(REPO, dict(model_files))
    yield from _started(h)


@pytest.fixture
def hf_hub(model_files: dict[str, Path]) -> Iterator[FakeHub]:
    h = HuggingFaceHub(token=TOKEN)
    h.add_repo(REPO, dict(model_files))
    yield from _started(h)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "volume"
    r.mkdir()
    return r
