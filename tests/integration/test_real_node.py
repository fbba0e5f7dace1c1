"""The demo on a real node: the download Job and the serving pod run in real containers (containerd + runc)
under a real kubelet, from images built from this repository's Dockerfile. Needs root, Debian's runc,
containernetworking-plugins, buildah, debootstrap, s3fs and iptables (`.ci/run` installs them); the images
are built once and cached (`make bins`). A missing piece fails the module with the reason, never skips it.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache_devcluster.images import OPERATOR_IMAGE
from modelcache_devcluster.node import REAL_NODE
from modelcache_operator.downloader.manifest import verify_manifest
from tests.hubs import package_model_files
from tests.prewarm_support import size_of
from tests.slowfs import s3fs_mount, slow_http
from tests.support.demo_flow import CACHE
from tests.support.kube import wait_for
from tests.support.prewarm_pod import delete_pod, prewarm_pod, ready_pod
from tests.support.real_node_flow import (
    RealDemoResult,
    RealNodeCluster,
    demo_services,
    run_real_demo,
)

pytestmark = pytest.mark.integration
SUMMARY = re.compile(r"^modelcache-prewarm: files=(?P<files>\d+) bytes=\S+ warmed=(?P<warmed>\S+) .* "
                     r"skipped=(?P<skipped>\d+) "
                     r"errors=(?P<errors>\d+) timeout=(?P<timeout>true|false)$")
MiB = 1 << 20


@pytest.fixture(scope="module")
def demo(real_cluster: RealNodeCluster) -> Iterator[RealDemoResult]:
    with demo_services(real_cluster.cluster, real_cluster.workdir, lambda _: None) as (k8s, hub, operator):
        yield run_real_demo(real_cluster.cluster, k8s, hub, operator, real_cluster.workdir, lambda _: None)


def test_download_job_ran_in_a_container_on_the_real_node(demo: RealDemoResult) -> None:
    assert demo.job_pod.spec.node_name == REAL_NODE
    assert demo.job_pod.status.phase == "Succeeded"
    container = demo.job_pod.status.container_statuses[0]
    assert container.image_id and container.state.terminated.exit_code == 0
    assert container.image in (OPERATOR_IMAGE, OPERATOR_IMAGE.removeprefix("docker.io/library/"))
    assert "Resolved main to" in demo.download_log and "Published" in demo.download_log


def test_files_written_through_the_hostpath_volume_verify(demo: RealDemoResult) -> None:
    manifest = verify_manifest(demo.revision_dir)
    assert manifest.revision == demo.cache["status"]["resolvedRevision"]
    shipped = package_model_files()
    assert {f.path for f in manifest.files} == set(shipped)
    for entry in manifest.files:
        assert entry.sha256 == hashlib.sha256(Path(shipped[entry.path]).read_bytes()).hexdigest()
    # Written by the container's user (the image's USER), not by the test.
    assert (demo.revision_dir / ".modelcache" / "manifest.json").stat().st_uid == 65532


def test_serving_pod_is_ready_on_the_real_node_with_the_injected_mount(demo: RealDemoResult) -> None:
    pod = demo.pod
    assert pod.spec.node_name == REAL_NODE
    mount = next(m for m in pod.spec.containers[0].volume_mounts if m.name == f"mc-{CACHE}")
    assert mount.read_only is True and mount.sub_path == demo.cache["status"]["revisionPath"]
    assert pod.spec.containers[0].lifecycle.post_start._exec.command[0] == "/bin/sh"
    # The serving stand-in loaded the real MiniLM weights with the safetensors library through the mount.
    assert re.search(rf"serve: loaded \d+ tensors \(\d+ parameters\) from 1 files in {mount.mount_path}",
                     demo.server_log), demo.server_log


def test_poststart_prewarm_filled_the_page_cache(demo: RealDemoResult) -> None:
    assert demo.cold_resident < 0.05
    assert demo.resident == pytest.approx(1.0, abs=0.01)
    m = SUMMARY.match(demo.prewarm_line)
    assert m, demo.prewarm_line
    assert (m["files"], m["errors"], m["timeout"]) == ("13", "0", "false")
    assert "resident=100.0%" in demo.prewarm_line


def _open_by_prewarm(name: str) -> bool:
    """Whether a process of the prewarm program (in any container) has a file called name open."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"prewarm" not in (proc / "cmdline").read_bytes():
                continue
            if any(os.readlink(fd).endswith(name) for fd in (proc / "fd").iterdir()):
                return True
        except OSError:
            continue
    return False


def test_vanishing_file_and_hung_read_do_not_keep_the_container_from_starting(
        real_cluster: RealNodeCluster, tmp_path: Path) -> None:
    """On an s3fs hostPath, with one worker: a slow file is warmed; the next one is deleted from the object store
    while the prewarm is busy with the first (s3fs still lists it, then reads it as empty); the last one never
    answers. The hook must give up at its timeout and the container must start."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "a-slow.safetensors").write_bytes(os.urandom(8 * MiB))
    vanishing = store / "b-vanishes.safetensors"
    vanishing.write_bytes(os.urandom(4 * MiB))
    (store / "c-hangs.safetensors").write_bytes(os.urandom(4 * MiB))
    k8s, namespace, timeout_seconds = real_cluster.k8s, "default", 12
    # uid/gid: the container's user owns the files, so mincore answers truthfully for it (see _hostile_pod).
    with (slow_http(store, stream_bps=2 * MiB, hang={"c-hangs.safetensors"}) as url,
          s3fs_mount(url, tmp_path / "mnt", "allow_other", "umask=0222", "uid=65532", "gid=65532") as mnt):
        started = time.monotonic()
        # One worker, as the container's user (65532): Linux's mincore reports every page of a file as
        # resident to a process that neither owns the file nor may write it.
        k8s.core.create_namespaced_pod(namespace, prewarm_pod(
            "hostile-prewarm", mnt, concurrency=1, timeout_seconds=timeout_seconds))
        try:
            wait_for(lambda: _open_by_prewarm("a-slow.safetensors") or None, 120, interval=0.05,
                     describe="the prewarm reading a-slow.safetensors in the container")
            vanishing.unlink()  # gone from the object store while the prewarm is mid-run
            pod = wait_for(lambda: ready_pod(k8s, namespace, "hostile-prewarm"), 120, interval=0.5,
                           describe="the container started and Ready despite the hook's troubles")
            waited = time.monotonic() - started
            log_dir = real_cluster.cluster.node_layout.empty_dir(pod.metadata.uid, "log")
            lines = (log_dir / "server.log").read_text().splitlines()
        finally:
            delete_pod(k8s, namespace, "hostile-prewarm")  # before its hostPath is unmounted
    line = next(line for line in reversed(lines) if line.startswith("modelcache-prewarm"))
    m = SUMMARY.match(line)
    assert m, lines
    assert m["files"] == "3" and m["timeout"] == "true", line
    # The slow file, plus at most what the hung one delivered before it stopped answering; never the whole 16 MiB.
    assert 8 * MiB <= size_of(m["warmed"]) < 12 * MiB, line
    # Bounded by the hook's own timeout (plus sandbox, init container and probe), not by the hung read.
    assert waited < timeout_seconds + 30, waited

