"""The README's demo as a test: a real model goes from apply to Ready through our downloader, and the serving
pod is injected, pinned and prewarmed. Runs on its own control plane, since it starts its own operator."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache_devcluster.binaries import Binaries
from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.downloader.manifest import load_manifest, verify_manifest
from tests.hubs import package_model_files
from tests.support.demo_flow import CACHE, DemoResult, run_demo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoResult]:
    workdir = tmp_path_factory.mktemp("demo")
    cluster = LocalCluster(binaries, workdir / "cluster")
    cluster.up()
    try:
        yield run_demo(cluster, workdir, lambda _: None)
    finally:
        cluster.down()


def test_manifest_is_published_and_every_hash_verifies(demo: DemoResult) -> None:
    manifest = verify_manifest(demo.revision_dir)
    assert manifest.revision == demo.cache["status"]["resolvedRevision"]
    shipped = package_model_files()
    assert {f.path for f in manifest.files} == set(shipped)
    for entry in manifest.files:
        assert hashlib.sha256((demo.revision_dir / entry.path).read_bytes()).hexdigest() == entry.sha256
        assert entry.sha256 == hashlib.sha256(Path(shipped[entry.path]).read_bytes()).hexdigest()
    assert load_manifest(demo.revision_dir).format == "safetensors"


def test_cache_is_ready_with_size_and_revision(demo: DemoResult) -> None:
    status = demo.cache["status"]
    manifest = load_manifest(demo.revision_dir)
    assert status["phase"] == "Ready"
    assert status["sizeBytes"] == manifest.totalBytes and status["fileCount"] == manifest.fileCount
    assert status["format"] == "safetensors"
    assert len(status["resolvedRevision"]) == 40


def test_serving_pod_mounts_the_pinned_revision_read_only(demo: DemoResult) -> None:
    pod = demo.pod
    assert pod.status.phase == "Running"
    volume = next(v for v in pod.spec.volumes if v.name == f"mc-{CACHE}")
    assert volume.persistent_volume_claim.read_only is True
    mount = next(m for m in pod.spec.containers[0].volume_mounts if m.name == f"mc-{CACHE}")
    assert mount.read_only is True and mount.sub_path == demo.cache["status"]["revisionPath"]
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env["MODEL_DIR"] == mount.mount_path


def test_page_cache_holds_the_model_and_the_hook_logged_it(demo: DemoResult) -> None:
    assert demo.resident == pytest.approx(1.0, abs=0.01)
    assert demo.prewarm_line.startswith("modelcache-prewarm: files=13 ")
    assert "resident=100.0%" in demo.prewarm_line and "errors=0" in demo.prewarm_line


def test_download_progress_was_logged(demo: DemoResult) -> None:
    assert "Resolved main to" in demo.download_log
    assert "Published" in demo.download_log
