"""A StatefulSet synced from Git shows no drift after its pods were injected: the webhook mutates the pods,
never the StatefulSet that Argo CD compares with Git. The diff is the apiserver's own (`kubectl diff
--server-side`, what Argo CD's server-side diff runs), after a sync as Argo CD's field manager."""

from __future__ import annotations

import json
import subprocess

import pytest

from modelcache_devcluster.cluster import LocalCluster
from tests.integration.test_webhook import (
    INJECT,
    Stores,
    pinned_to,
    ready_cache,
    serving_pod,
    settled,
    stores,  # noqa: F401  (fixture)
)
from tests.support.downloader_role import REVISION_A
from tests.support.kube import Cluster, wait_for
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration
MANAGER = "argocd-controller"


def kubectl(cluster: LocalCluster, *args: str, manifest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(cluster.binaries.kubectl), f"--kubeconfig={cluster.state.kubeconfig}", *args],
                          input=manifest, capture_output=True, text=True, timeout=120)


def test_an_injected_statefulset_shows_no_drift(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                local_cluster: LocalCluster, stores: Stores) -> None:  # noqa: F811
    store = stores.nfs(namespace)
    ready_cache(k8s, local_cluster, operator, namespace, "qwen", store)
    template = serving_pod("ignored", "qwen")
    settled(k8s, namespace, template, pinned_to(REVISION_A, "qwen"))
    git = json.dumps({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "server", "namespace": namespace},
        "spec": {"serviceName": "server", "replicas": 1, "selector": {"matchLabels": {"app": "server"}},
                 "template": {"metadata": {"labels": {"app": "server", **INJECT},
                                           "annotations": template["metadata"]["annotations"]},
                              "spec": template["spec"]}}})
    synced = kubectl(local_cluster, "apply", "--server-side", f"--field-manager={MANAGER}", "-f", "-", manifest=git)
    assert synced.returncode == 0, synced.stderr
    pod = wait_for(lambda: next(iter(k8s.core.list_namespaced_pod(namespace, label_selector="app=server").items),
                                None), 60, describe="the StatefulSet's pod", diagnostics=operator.log_tail)
    assert pod.metadata.annotations["modelcache.dev/injected"] == "true"
    assert any(v.name == "mc-qwen" for v in pod.spec.volumes)

    diff = kubectl(local_cluster, "diff", "--server-side", f"--field-manager={MANAGER}", "-f", "-", manifest=git)
    # kubectl diff: 0 no differences, 1 differences, >1 an error.
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    live = k8s.apps.read_namespaced_stateful_set("server", namespace)
    assert not any(v.name == "mc-qwen" for v in live.spec.template.spec.volumes or [])
    assert "modelcache.dev/injected" not in (live.spec.template.metadata.annotations or {})
