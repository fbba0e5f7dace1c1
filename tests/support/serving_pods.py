"""The serving side of the real-node flows (tests/support/real_node_flow.py, node_demo_flow.py): a labelled
StatefulSet of the serving stand-in image on the real node, injected by the webhook, and what its pods show:
their logs, their Ready condition, the postStart prewarm summary in the log emptyDir under the kubelet's pod
dir, and the page-cache residency of the model files it loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from modelcache_devcluster.node import REAL_NODE, REAL_NODE_LABEL, REAL_NODE_TAINT
from modelcache_operator.api.names import ANN_CACHES, LABEL_INJECT
from modelcache_operator.webhook.injection import LOG_VOLUME
from tests.residency import evict, files_under, resident_fraction
from tests.support.kube import Cluster, wait_for
from tests.support.real_node import SERVING_IMAGE

NODE_SELECTOR = {REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]}
TOLERATIONS = [{"key": REAL_NODE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}]
APP = "embedder"


def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def pod_log(k8s: Cluster, name: str, namespace: str) -> str:
    try:
        return str(k8s.core.read_namespaced_pod_log(name, namespace))
    except ApiException as error:
        return f"(no log: {error.status} {error.reason})"


def evict_model_files(revision_dir: Path) -> tuple[list[Path], float]:
    """The model files of a published revision (not the .modelcache bookkeeping), out of the host's page
    cache, and the fraction of them still resident afterwards."""
    files = [p for p in files_under(revision_dir) if ".modelcache" not in p.parts]
    evict(files)
    return files, resident_fraction(files)


def start_serving(k8s: Cluster, namespace: str, cache: str, replicas: int, diagnostics: Callable[[], str],
                  timeout: float = 240) -> list[Any]:
    """Creates the StatefulSet APP of `replicas` serving pods opted in for `cache` on the real node; returns
    its pods, by name, once every one is Ready (injected, prewarmed by postStart, the weights loaded)."""
    k8s.apps.create_namespaced_stateful_set(namespace, {
        "metadata": {"name": APP},
        "spec": {"serviceName": APP, "replicas": replicas, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": APP}},
                 "template": {
                     "metadata": {"labels": {"app": APP, LABEL_INJECT: "true"}, "annotations": {ANN_CACHES: cache}},
                     "spec": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS,
                              "terminationGracePeriodSeconds": 2,
                              "containers": [{
                                  "name": "server", "image": SERVING_IMAGE, "args": ["$(MODEL_DIR)"],
                                  "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]},
                                                     "periodSeconds": 1},
                                  "resources": {"limits": {"memory": "4Gi"}}}]}}}})

    def all_ready() -> list[Any] | None:
        pods = k8s.core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items
        ready = [p for p in pods if pod_ready(p)]
        return sorted(ready, key=lambda p: p.metadata.name) if len(ready) == replicas else None

    def pods_and_events() -> str:
        pods = k8s.core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items
        events = [f"{e.involved_object.name} {e.reason}: {e.message}" for e in k8s.events(namespace)][-15:]
        return "\n".join([*(f"{p.metadata.name}: {p.status}" for p in pods), *events, diagnostics()])

    return wait_for(all_ready, timeout, interval=0.5, describe=f"{replicas} serving pods Ready on {REAL_NODE}",
                    diagnostics=pods_and_events)


def prewarm_summary(cluster: LocalCluster, pod: Any) -> str:
    """The pod's last `modelcache-prewarm` line, from the log emptyDir under the kubelet's pod dir."""
    log_dir = cluster.node_layout.empty_dir(pod.metadata.uid, LOG_VOLUME)
    lines = [line for log in sorted(log_dir.glob("*")) for line in log.read_text().splitlines()]
    return next((line for line in reversed(lines) if line.startswith("modelcache-prewarm")),
                f"(no prewarm summary in {log_dir})")
