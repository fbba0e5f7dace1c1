"""A pod with exactly the prewarm pieces the webhook injects (the install init container and the postStart
hook of modelcache_operator.prewarm.hook) over a hostPath model folder, for the real-node prewarm tests. The
server sleeps, so only the hook decides when the container starts; it runs as the image's user (65532)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelcache_devcluster.images import OPERATOR_IMAGE
from modelcache_operator.prewarm.hook import install_command, poststart_command
from tests.support.kube import Cluster, wait_for
from tests.support.real_node_flow import NODE_SELECTOR, TOLERATIONS

TOOLS = "/opt/modelcache"
# The hook's log file in the pod's "log" emptyDir (read on the node: layout.empty_dir(uid, "log")).
LOG_FILE = "/var/log/modelcache/server.log"


def prewarm_pod(name: str, model: Path, *, concurrency: int, timeout_seconds: int,
                limits: dict[str, str] | None = None) -> dict[str, Any]:
    server: dict[str, Any] = {
        "name": "server", "image": OPERATOR_IMAGE, "command": ["sleep", "infinity"],
        "lifecycle": {"postStart": {"exec": {"command": poststart_command(
            TOOLS, ["/models"], concurrency, timeout_seconds, LOG_FILE)}}},
        "volumeMounts": [{"name": "tools", "mountPath": TOOLS, "readOnly": True},
                         {"name": "log", "mountPath": "/var/log/modelcache"},
                         {"name": "models", "mountPath": "/models", "readOnly": True}],
    }
    if limits:
        server["resources"] = {"limits": limits}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS, "terminationGracePeriodSeconds": 1,
            "initContainers": [{"name": "modelcache-install", "image": OPERATOR_IMAGE,
                                "command": install_command(TOOLS),
                                "volumeMounts": [{"name": "tools", "mountPath": TOOLS}]}],
            "containers": [server],
            "volumes": [{"name": "tools", "emptyDir": {}}, {"name": "log", "emptyDir": {}},
                        {"name": "models", "hostPath": {"path": str(model), "type": "Directory"}}],
        },
    }


def ready_pod(k8s: Cluster, namespace: str, name: str) -> Any:
    """The pod once its container runs and it is Ready, else None."""
    pod = k8s.core.read_namespaced_pod(name, namespace)
    running = pod.status.container_statuses and pod.status.container_statuses[0].state.running
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return pod if running and ready else None


def delete_pod(k8s: Cluster, namespace: str, name: str) -> None:
    """Deletes the pod and waits until it is gone (before its hostPath may be removed or unmounted)."""
    k8s.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    wait_for(lambda: not k8s.core.list_namespaced_pod(
        namespace, field_selector=f"metadata.name={name}").items or None, 60, describe=f"the pod {name} gone")
