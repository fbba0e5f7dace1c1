"""The Helm chart installed onto the real node: the operator runs as the chart's Deployment Pod(s), in real
containers under the node's kubelet, from the image built from this repository (already in the node's
containerd, so pullPolicy Never: a missing image fails the pod instead of reaching for a registry).

The operator reaches the apiserver from the pod network through the `kubernetes` Service address (the
node's nat rule and relay, modelcache_devcluster.node), with the KUBERNETES_SERVICE_HOST/PORT the kubelet
sets; the apiserver calls the chart's webhook Service at the operator pods' addresses on the node's bridge
(--enable-aggregator-routing, modelcache_devcluster.cluster). The webhooks' TLS is the chart's own CA.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from modelcache_devcluster.images import OPERATOR_IMAGE
from modelcache_devcluster.node import REAL_NODE_LABEL, REAL_NODE_TAINT
from modelcache_operator.api import v1alpha2 as api
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import delete_webhook_configurations
from tests.support.serving_pods import pod_ready

CHART = Path(__file__).resolve().parents[2] / "charts" / "modelcache-operator"
CRD_NAMES = tuple(f"{plural}.{api.GROUP}" for plural in (api.STORE_PLURAL, api.PLURAL, api.DOWNLOAD_PLURAL))
RELEASE = "mc"


def node_values() -> dict[str, Any]:
    """What the chart needs to run on the real node: the image on the node, its selector and toleration;
    hostPath stores (the development backend) allowed, and a short resync so a demo does not wait."""
    repository, tag = OPERATOR_IMAGE.rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "nodeSelector": {REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]},
        "tolerations": [{"key": REAL_NODE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
        "stores": {"allowHostPath": True},
        "operator": {"resyncSeconds": 5},
    }


def merge_values(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mappings merge key by key; anything else in overrides replaces the base value."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass
class ChartRelease:
    """One `helm install` of the chart on a cluster with a real node; `values` is what the release runs with."""

    cluster: LocalCluster
    k8s: Cluster
    workdir: Path
    name: str = RELEASE
    namespace: str = OPERATOR_NAMESPACE
    values: dict[str, Any] = field(default_factory=node_values)

    @property
    def deployment(self) -> str:
        return self.name if "modelcache-operator" in self.name else f"{self.name}-modelcache-operator"

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/name=modelcache-operator,app.kubernetes.io/instance={self.name}"

    def helm(self, *args: str, timeout: float = 300) -> str:
        argv = [str(self.cluster.binaries.helm), "--kubeconfig", self.cluster.state.kubeconfig, *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                               f"{result.stderr}\n{self.diagnostics()}")
        return result.stdout

    def _values_file(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"{self.name}-values.yaml"
        path.write_text(yaml.safe_dump(self.values))
        return path

    def install(self, timeout: float = 180) -> str:
        """helm install (CRDs included: ones already applied with kubectl are adopted), then wait for every
        replica Ready. Returns helm's output (NOTES.txt)."""
        # A host-run operator's kopf-managed webhooks (tests.support.operator) would answer for the same
        # objects, or point at a process that is gone; the chart's own replace them.
        delete_webhook_configurations(self.k8s.client)
        self._adopt_crds()
        out = self.helm("install", self.name, str(CHART), "--namespace", self.namespace, "--create-namespace",
                        "-f", str(self._values_file()))
        self.wait_ready(timeout)
        return out

    def upgrade(self, overrides: Mapping[str, Any], timeout: float = 180) -> str:
        """helm upgrade with the release's values merged with overrides; waits until the Deployment has rolled
        out (every replica of the new template Ready, none of the old one left)."""
        self.values = merge_values(self.values, overrides)
        out = self.helm("upgrade", self.name, str(CHART), "--namespace", self.namespace,
                        "-f", str(self._values_file()))
        self.wait_ready(timeout)
        return out

    def uninstall(self) -> None:
        """helm uninstall; waits until the operator pods are gone. The CRDs stay (resource-policy keep).
        Nothing to do when the install never created the release."""
        if self.name not in self.helm("list", "--namespace", self.namespace, "--all", "--short").split():
            return
        self.helm("uninstall", self.name, "--namespace", self.namespace, "--wait", "--timeout", "120s")
        wait_for(lambda: not self.pods() or None, 60, describe=f"the {self.name} operator pods gone",
                 diagnostics=self.diagnostics)

    def _adopt_crds(self) -> None:
        for crd in CRD_NAMES:
            if not self.cluster.kubectl("get", "crd", crd, "--ignore-not-found", "-o", "name").strip():
                continue
            self.cluster.kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")
            self.cluster.kubectl("annotate", "--overwrite", "crd", crd, f"meta.helm.sh/release-name={self.name}",
                                 f"meta.helm.sh/release-namespace={self.namespace}")

    # ----- observing the release -----

    def pods(self) -> list[Any]:
        return list(self.k8s.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items)

    def ready_pods(self) -> list[Any]:
        return [p for p in self.pods() if p.metadata.deletion_timestamp is None and pod_ready(p)]

    def rolled_out(self) -> bool:
        try:
            deployment = self.k8s.apps.read_namespaced_deployment(self.deployment, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        status, want = deployment.status, deployment.spec.replicas
        return bool((status.observed_generation or 0) >= deployment.metadata.generation
                    and status.updated_replicas == want and status.ready_replicas == want
                    and status.replicas == want and len(self.ready_pods()) == want == len(self.pods()))

    def wait_ready(self, timeout: float = 180) -> list[Any]:
        wait_for(self.rolled_out, timeout, interval=1, describe=f"the {self.deployment} Deployment rolled out",
                 diagnostics=self.diagnostics)
        return self.ready_pods()

    def logs(self, tail: int = 40) -> str:
        parts = []
        for pod in self.pods():
            try:
                text = self.k8s.core.read_namespaced_pod_log(pod.metadata.name, self.namespace, tail_lines=tail)
            except ApiException as error:
                text = f"(no log: {error.status} {error.reason})"
            parts.append(f"--- {pod.metadata.name} ({pod.status.phase} on {pod.spec.node_name}):\n{text}")
        return "\n".join(parts)

    def diagnostics(self) -> str:
        pods = [f"{p.metadata.name}: {p.status.phase} {p.status.container_statuses}" for p in self.pods()]
        events = [f"{e.involved_object.kind}/{e.involved_object.name} {e.reason}: {e.message}"
                  for e in self.k8s.events(self.namespace)][-20:]
        return "\n".join(["operator pods:", *pods, "events:", *events, self.logs()])


@contextmanager
def chart_on_node(cluster: LocalCluster, k8s: Cluster, workdir: Path, overrides: Mapping[str, Any] | None = None,
                  *, name: str = RELEASE, say: Callable[[str], None] = lambda _: None) -> Iterator[ChartRelease]:
    """The chart installed and Ready for the block, uninstalled after it (the CRDs stay)."""
    release = ChartRelease(cluster, k8s, workdir, name=name, values=merge_values(node_values(), overrides or {}))
    say(f"helm install {name} charts/modelcache-operator -n {release.namespace} "
        f"(image {OPERATOR_IMAGE}, on the real node)")
    try:
        release.install()
        yield release
    finally:
        release.uninstall()
