"""Prewarm under a pod memory limit below the model's size, on the real node: the injected hook (the same
commands the webhook injects) warms only what the container can keep, the container is not OOM-killed, and
its prewarm line is in `kubectl logs` (the hook writes it to the container's stdout, /proc/1/fd/1)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from modelcache_devcluster.images import OPERATOR_IMAGE
from modelcache_operator.prewarm.hook import install_command, poststart_command
from tests.residency import evict, resident_fraction, write_file
from tests.support.kube import wait_for
from tests.support.real_node_flow import NODE_SELECTOR, TOLERATIONS, RealNodeCluster

pytestmark = pytest.mark.integration
MiB = 1 << 20
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
LIMIT = 256 * MiB
SHARD = 64 * MiB
NAME = "prewarm-budget"
LINE = re.compile(r"^modelcache-prewarm: files=(?P<files>\d+) bytes=\S+ warmed=(?P<warmed>\S+) .* "
                  r"budget=(?P<budget>[\d.]+\w+)\(cgroup\) over_budget=(?P<over>\S+) skipped=0 errors=0 "
                  r"timeout=false$", re.M)


def size_of(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(B|KiB|MiB|GiB)", text)
    assert m, text
    return float(m.group(1)) * UNITS[m.group(2)]


def _pod(model: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": NAME},
        "spec": {
            "nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS, "terminationGracePeriodSeconds": 1,
            "initContainers": [{"name": "modelcache-install", "image": OPERATOR_IMAGE,
                                "command": install_command("/opt/modelcache"),
                                "volumeMounts": [{"name": "tools", "mountPath": "/opt/modelcache"}]}],
            "containers": [{
                "name": "server", "image": OPERATOR_IMAGE, "command": ["sleep", "infinity"],
                "resources": {"limits": {"memory": str(LIMIT), "cpu": "1"}},
                "lifecycle": {"postStart": {"exec": {"command": poststart_command(
                    "/opt/modelcache", ["/models"], 4, 120, "/var/log/modelcache/server.log")}}},
                "volumeMounts": [{"name": "tools", "mountPath": "/opt/modelcache", "readOnly": True},
                                 {"name": "log", "mountPath": "/var/log/modelcache"},
                                 {"name": "models", "mountPath": "/models", "readOnly": True}],
            }],
            "volumes": [{"name": "tools", "emptyDir": {}}, {"name": "log", "emptyDir": {}},
                        {"name": "models", "hostPath": {"path": str(model), "type": "Directory"}}],
        },
    }


def test_a_pod_whose_limit_is_below_the_model_prewarms_within_budget(
        real_cluster: RealNodeCluster, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir(mode=0o755)
    shards = [model / f"model-0000{i}-of-00006.safetensors" for i in range(6)]  # 384 MiB > the 256 MiB limit
    for i, shard in enumerate(shards):
        write_file(shard, SHARD, seed=i)
        os.chown(shard, 65532, 65532)  # the container's user: mincore answers it truthfully
        shard.chmod(0o644)
    evict(shards)
    assert resident_fraction(shards) < 0.05
    k8s, namespace = real_cluster.k8s, "default"
    k8s.core.create_namespaced_pod(namespace, _pod(model))
    try:
        wait_for(lambda: _ready(k8s, namespace), 180, interval=0.5, describe="the memory-limited pod Ready")
        log = wait_for(lambda: LINE.search(k8s.core.read_namespaced_pod_log(NAME, namespace, container="server"))
                       or None, 60, interval=0.5, describe="the prewarm line in kubectl logs")
        time.sleep(2)  # a late OOM kill would show now
        status = k8s.core.read_namespaced_pod(NAME, namespace).status.container_statuses[0]
    finally:
        k8s.core.delete_namespaced_pod(NAME, namespace, grace_period_seconds=0)
        wait_for(lambda: not k8s.core.list_namespaced_pod(
            namespace, field_selector=f"metadata.name={NAME}").items or None, 60, describe="the pod gone")
    assert status.restart_count == 0 and status.state.running, status
    assert status.last_state.terminated is None, status  # never OOM-killed
    budget = size_of(log["budget"])
    assert budget < LIMIT
    assert 0 < size_of(log["warmed"]) <= budget, log.group(0)
    assert size_of(log["over"]) >= 2 * SHARD, log.group(0)
    per_shard = [resident_fraction([s]) for s in shards]
    assert sum(f * SHARD for f in per_shard) <= budget, per_shard
    assert per_shard[0] > 0.95, per_shard  # the first-priority shard stayed resident
    assert per_shard[-1] < 0.05, per_shard


def _ready(k8s: Any, namespace: str) -> Any:
    pod = k8s.core.read_namespaced_pod(NAME, namespace)
    running = pod.status.container_statuses and pod.status.container_statuses[0].state.running
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return pod if running and ready else None
