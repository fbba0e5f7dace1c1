"""A pinned download fetches the commit an earlier run resolved, even after the branch moved upstream: the real
downloader against the loopback hub, whose old commit stays fetchable by its sha."""

from __future__ import annotations

from pathlib import Path

from modelcache_operator.downloader import ExitCode, load_manifest
from tests.component.conftest import REPO, run_downloader
from tests.hubs import FakeHub


def test_a_pinned_run_fetches_the_pinned_commit_after_the_branch_moved(hf_hub: FakeHub, model_files: dict[str, Path],
                                                                      root: Path) -> None:
    pinned = hf_hub.repos[REPO].sha
    moved = hf_hub.move_branch(REPO, {**model_files, "NEW_FILE.md": b"only in the new commit\n"})
    assert moved != pinned
    result = run_downloader(hf_hub, root, MC_REVISION="main", MC_PINNED_REVISION=pinned)
    assert result.code == ExitCode.PUBLISHED, result.stderr
    assert "resolved to " + pinned + " by an earlier run" in result.stderr
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [pinned]
    manifest = load_manifest(root / pinned)
    assert manifest.revision == pinned and manifest.source.requestedRevision == "main"
    assert not (root / pinned / "NEW_FILE.md").exists()
    assert not any("NEW_FILE.md" in path for _, path in hf_hub.requests)
    # Without a pin the same branch resolves to the new commit: the pin is what kept it.
    fresh = run_downloader(hf_hub, root, MC_REVISION="main")
    assert fresh.code == ExitCode.PUBLISHED, fresh.stderr
    assert (root / moved / "NEW_FILE.md").read_bytes() == b"only in the new commit\n"
