"""`make demo`'s flow (tests.support.node_demo_flow.demo_on_node), end to end on the real node: the chart's
operator pod, the download Job in a container with its progress watched, and a StatefulSet of 2 serving pods
injected, prewarmed and Ready. Under its own names, and removed afterwards, so other modules of the session
keep a clean cluster. Needs what test_real_node.py needs; a missing piece fails the module with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from modelcache_devcluster.images import OPERATOR_IMAGE
from modelcache_devcluster.node import REAL_NODE
from modelcache_operator.api.names import ANN_INJECTED
from tests.support.chart_on_node import ChartRelease
from tests.support.node_demo_flow import DemoNames, NodeDemoResult, Steps, demo_on_node
from tests.support.real_node_flow import RealNodeCluster

pytestmark = pytest.mark.integration
NAMES = DemoNames(namespace="demo-e2e", store="demo-e2e-hostpath", cache="minilm")
SUMMARY = re.compile(r"^modelcache-prewarm: files=(?P<files>\d+) .* errors=(?P<errors>\d+) "
                     r"timeout=(?P<timeout>true|false)$")
IMAGES = (OPERATOR_IMAGE, OPERATOR_IMAGE.removeprefix("docker.io/library/"))


@dataclass(frozen=True)
class Demo:
    release: ChartRelease
    result: NodeDemoResult
    steps: Steps
    said: list[str]


@pytest.fixture(scope="module")
def demo(real_cluster: RealNodeCluster) -> Iterator[Demo]:
    said: list[str] = []
    steps = Steps(said.append)
    with demo_on_node(real_cluster.cluster, real_cluster.k8s, real_cluster.workdir / "demo", steps, NAMES) as (
            release, result):
        yield Demo(release, result, steps, said)


def test_operator_runs_as_the_charts_pods_on_the_real_node(demo: Demo) -> None:
    pods = demo.release.ready_pods()
    assert len(pods) == 2  # the chart's default replicas, every one Ready
    for pod in pods:
        assert pod.spec.node_name == REAL_NODE
        assert pod.status.container_statuses[0].container_id.startswith("containerd://")
        assert pod.status.container_statuses[0].image in IMAGES


def test_download_job_ran_in_a_container_and_its_progress_was_shown(demo: Demo) -> None:
    job_pod = demo.result.job_pod
    assert job_pod.spec.node_name == REAL_NODE and job_pod.status.phase == "Succeeded"
    assert job_pod.status.container_statuses[0].image in IMAGES
    assert "Published" in demo.result.download_log
    phases = [line.split()[0] for line in demo.result.progress]
    assert phases[-1] == "Ready" and "Downloading" in phases, demo.result.progress
    # At least one report between the first byte and the last: the progress was live, not only its end.
    partial = [line for line in demo.result.progress if re.search(r"\b([1-9]|[1-9]\d)%", line)]
    assert partial, demo.result.progress
    assert any(f"mc/{NAMES.cache}  Downloading" in line for line in demo.said)


def test_statefulset_pods_injected_prewarmed_and_ready(demo: Demo) -> None:
    result = demo.result
    assert len(result.pods) == 2
    for serving in result.pods:
        pod = serving.pod
        assert pod.spec.node_name == REAL_NODE
        assert pod.metadata.annotations[ANN_INJECTED] == "true"
        mount = next(m for m in pod.spec.containers[0].volume_mounts if m.name == f"mc-{NAMES.cache}")
        assert mount.read_only and mount.sub_path == result.cache["status"]["revisionPath"]
        assert re.search(rf"serve: loaded \d+ tensors .* in {mount.mount_path}", serving.server_log), serving
        m = SUMMARY.match(serving.prewarm_line)
        assert m and (m["errors"], m["timeout"]) == ("0", "false"), serving.prewarm_line
        assert "resident=100.0%" in serving.prewarm_line
    assert result.cold_resident < 0.05
    assert result.resident == pytest.approx(1.0, abs=0.01)


def test_kubectl_get_mc_and_step_timings_printed(demo: Demo) -> None:
    header, row = demo.result.get_mc.strip().splitlines()
    assert header.split()[:2] == ["NAME", "MODEL"]
    assert row.split()[0] == NAMES.cache and "Ready" in row.split() and "100%" in row.split()
    names = [name for name, _ in demo.steps.timings]
    assert names == ["helm install, operator pod Ready", "ModelStore Ready", "download (Job in a container)",
                     "StatefulSet of 2: injected, prewarmed, Ready"]
    assert all(seconds > 0 for _, seconds in demo.steps.timings)
