"""Any hub that speaks the Hugging Face protocol: minimal mirrors, the tree API, HEAD metadata, a CDN host, and
a Xet-backed repo behind the Xet bridge."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import get_hf_file_metadata, hf_hub_url
from huggingface_hub.utils._xet import refresh_xet_connection_info

from modelcache_operator.downloader import load_manifest, verify_manifest
from tests.component.conftest import REPO, TOKEN, run_downloader
from tests.hubs import file_sha256
from tests.hubs.cdn import CdnHost
from tests.hubs.huggingface import HuggingFaceHub
from tests.hubs.xet import XetBridge, xet_hash


@pytest.fixture
def cdn() -> Iterator[CdnHost]:
    with CdnHost(host="127.0.0.2") as host:  # HubStartError: the test fails, never skips
        yield host


@pytest.fixture
def xet_bridge() -> Iterator[XetBridge]:
    with XetBridge(host="127.0.0.2") as host:
        yield host


def mirror(model_files: dict[str, Path], cdn: CdnHost | None = None, **shape: bool) -> HuggingFaceHub:
    """The MiniLM repo on a hub narrowed to `shape`, its LFS bodies behind `cdn` (a CDN or the Xet bridge)."""
    hub = HuggingFaceHub(token=TOKEN, cdn=cdn)
    hub.add_repo(REPO, dict(model_files))
    for k, v in shape.items():
        setattr(hub.mirror, k, v)
    return hub


def published_files(hub: HuggingFaceHub, root: Path) -> dict[str, tuple[bool, str]]:
    """path -> (verified, sha256) from the manifest, after checking every byte against the hub's file."""
    d = root / hub.repos[REPO].sha
    manifest = verify_manifest(d)
    files = hub.repos[REPO].files
    assert {f.path for f in manifest.files} == set(files)
    for f in manifest.files:
        assert f.size == files[f.path].size
        assert file_sha256(d / f.path) == f.sha256 == files[f.path].sha256, f.path
    return {f.path: (f.verified, f.sha256) for f in manifest.files}


def heads(hub: HuggingFaceHub) -> int:
    return sum(1 for method, path in hub.requests if method == "HEAD" and "/resolve/" in path)


def test_names_only_listing_takes_sizes_and_hashes_from_head(model_files: dict[str, Path], root: Path) -> None:
    """The reported bug: a listing without sizes made every file a ChecksumMismatch of `0` bytes."""
    with mirror(model_files, listing_sizes=False, tree_api=False) as hub:
        result = run_downloader(hub, root)
        assert result.code == 0, result.stderr
        assert "ChecksumMismatch" not in result.stderr
        got = published_files(hub, root)
        assert all(verified for verified, _ in got.values())
        assert any("/tree/" in path for _, path in hub.requests)  # asked, got 404, fell back
        # One HEAD per file to complete the listing, one per file to locate its body.
        assert heads(hub) == 2 * len(hub.repos[REPO].files)


def test_names_only_listing_uses_the_tree_api(model_files: dict[str, Path], root: Path) -> None:
    with mirror(model_files, listing_sizes=False, tree_api=True) as hub:
        result = run_downloader(hub, root)
        assert result.code == 0, result.stderr
        assert all(verified for verified, _ in published_files(hub, root).values())
        assert heads(hub) == len(hub.repos[REPO].files)  # only the per-file location, no completion HEADs


def test_wrong_hash_from_head_is_a_checksum_mismatch(model_files: dict[str, Path], root: Path) -> None:
    """Hashes taken from HEAD are really checked: a body that does not match them is refused."""
    with mirror(model_files, listing_sizes=False, tree_api=False) as hub:
        hub.repos[REPO].files["vocab.txt"].git_oid = "0" * 40
        result = run_downloader(hub, root)
        assert result.code == 13, result.stderr
        assert result.termination is not None and "vocab.txt" in result.termination["message"]
        assert not (root / hub.repos[REPO].sha / ".modelcache" / "manifest.json").exists()


def test_no_hash_anywhere_is_size_checked_and_marked_unverified(model_files: dict[str, Path],
                                                               root: Path) -> None:
    with mirror(model_files, listing_sizes=False, tree_api=False, head_etags=False) as hub:
        result = run_downloader(hub, root)
        assert result.code == 0, result.stderr
        got = published_files(hub, root)
        assert not any(verified for verified, _ in got.values())
        assert "checked by size only and marked unverified" in result.stderr
    manifest = load_manifest(root / hub.repos[REPO].sha)
    assert manifest.fileCount == len(got)


def test_large_files_come_from_a_second_host_without_the_token(model_files: dict[str, Path], root: Path,
                                                               cdn: CdnHost) -> None:
    with mirror(model_files, cdn=cdn, listing_sizes=False, tree_api=False) as hub:
        result = run_downloader(hub, root)
        assert result.code == 0, result.stderr
        assert all(verified for verified, _ in published_files(hub, root).values())
        lfs = {p for p, f in hub.repos[REPO].files.items() if f.lfs}
        assert lfs and set(cdn.bytes_served) == lfs
        for path in lfs:
            assert cdn.bytes_served[path] == hub.repos[REPO].files[path].size
            assert path not in hub.bytes_served
        assert cdn.auth_headers_seen == []  # the CDN would refuse a second authorization (400)
        assert hub.auth_headers_seen and all(h == f"Bearer {TOKEN}" for h in hub.auth_headers_seen)
        assert TOKEN not in result.stderr


def test_xet_backed_repo_comes_through_the_bridge_without_the_token(model_files: dict[str, Path], root: Path,
                                                                   xet_bridge: XetBridge) -> None:
    """hf_xet is installed and enabled here; the downloader still takes the resolve redirect (the bridge's plain
    bytes into its own sequential writer), and never asks for a Xet token or a CAS reconstruction."""
    assert importlib.util.find_spec("hf_xet") is not None  # the case "hf_xet installed" is the one under test
    with mirror(model_files, cdn=xet_bridge) as hub:
        result = run_downloader(hub, root, HF_HUB_DISABLE_XET="0")
        assert result.code == 0, result.stderr
        assert all(verified for verified, _ in published_files(hub, root).values())
        lfs = {p for p, f in hub.repos[REPO].files.items() if f.lfs}
        assert lfs and set(xet_bridge.bytes_served) == lfs
        assert all(xet_bridge.bytes_served[p] == hub.repos[REPO].files[p].size for p in lfs)
        assert xet_bridge.auth_headers_seen == []  # the bridge refuses a second authorization (400)
        assert xet_bridge.reconstruction_requests == []
        assert not any("/xet-read-token/" in path for _, path in hub.requests)
        assert TOKEN not in result.stderr


def test_the_xet_bridge_answers_as_huggingface_hub_reads_it(model_files: dict[str, Path],
                                                            xet_bridge: XetBridge) -> None:
    """The fake is checked against the real client: its parser finds the Xet hash and the token route."""
    with mirror(model_files, cdn=xet_bridge) as hub:
        repo = hub.repos[REPO]
        path = next(p for p, f in repo.files.items() if f.lfs)
        url = hf_hub_url(REPO, path, revision=repo.sha, endpoint=hub.url)
        meta = get_hf_file_metadata(url, token=TOKEN, endpoint=hub.url)
        assert meta.xet_file_data is not None and meta.xet_file_data.file_hash == xet_hash(repo.files[path])
        assert meta.xet_file_data.refresh_route == f"{hub.url}/api/models/{REPO}/xet-read-token/{repo.sha}"
        assert meta.location.startswith(f"{xet_bridge.url}/xet-bridge-us/")
        assert meta.size == repo.files[path].size and meta.etag == repo.files[path].sha256
        token = refresh_xet_connection_info(file_data=meta.xet_file_data, headers={"authorization": f"Bearer {TOKEN}"})
        assert token.endpoint == xet_bridge.url and token.access_token
