"""Prewarm under a pod memory limit below the model's size, on the real node: the injected hook (the same
commands the webhook injects) warms only what the container can keep, the container is not OOM-killed, and
its prewarm line is in `kubectl logs` (the hook writes it to the container's stdout, /proc/1/fd/1)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.prewarm_support import size_of
from tests.residency import evict, resident_fraction, write_file
from tests.support.kube import wait_for
from tests.support.prewarm_pod import delete_pod, prewarm_pod, ready_pod
from tests.support.real_node_flow import RealNodeCluster

pytestmark = pytest.mark.integration
MiB = 1 << 20
LIMIT = 256 * MiB
SHARD = 64 * MiB
NAME = "prewarm-budget"
LINE = re.compile(r"^modelcache-prewarm: files=(?P<files>\d+) bytes=\S+ warmed=(?P<warmed>\S+) .* "
                  r"budget=(?P<budget>[\d.]+\w+)\(cgroup\) over_budget=(?P<over>\S+) skipped=0 errors=0 "
                  r"timeout=false$", re.M)


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
    k8s.core.create_namespaced_pod(namespace, prewarm_pod(
        NAME, model, concurrency=4, timeout_seconds=120, limits={"memory": str(LIMIT), "cpu": "1"}))
    try:
        wait_for(lambda: ready_pod(k8s, namespace, NAME), 180, interval=0.5,
                 describe="the memory-limited pod Ready")
        log = wait_for(lambda: LINE.search(k8s.core.read_namespaced_pod_log(NAME, namespace, container="server"))
                       or None, 60, interval=0.5, describe="the prewarm line in kubectl logs")
        time.sleep(2)  # a late OOM kill would show now
        status = k8s.core.read_namespaced_pod(NAME, namespace).status.container_statuses[0]
    finally:
        delete_pod(k8s, namespace, NAME)
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

