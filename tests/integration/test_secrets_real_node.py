"""Least privilege, proven where a kubelet resolves Secrets: the operator runs with only the chart's
ClusterRole, which has no `secrets` rule, and a download whose token Secret is missing (then lacks its key)
is reported as SecretNotFound from its pod's CreateContainerConfigError. Once the Secret is right the
kubelet starts the same Job's pod and the cache becomes Ready. Real node: wrap in
`flock /tmp/mc-real-node.lock`."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from modelcache_devcluster.binaries import Binaries
from modelcache_devcluster.node import GATEWAY
from modelcache_operator.api import v1alpha2 as api
from tests.hubs import package_model_files
from tests.hubs.huggingface import HuggingFaceHub
from tests.integration.test_helm_install import chart_identity, chart_lease_name, forbidden_lines
from tests.support.demo_flow import REPO
from tests.support.kube import wait_for
from tests.support.operator import OperatorProcess, delete_webhook_configurations
from tests.support.real_node_flow import NODE_SELECTOR, TOLERATIONS, RealNodeCluster

pytestmark = pytest.mark.integration


def reason_of(k8s: Any, namespace: str, name: str) -> tuple[str, str] | None:
    cache = k8s.get_cache(namespace, name) or {}
    ready = next((c for c in (cache.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
    return (ready["reason"], ready["message"]) if ready else None


def test_secret_not_found_comes_from_the_pod_without_secret_access(real_cluster: RealNodeCluster,
                                                                   binaries: Binaries, tmp_path: Path) -> None:
    cluster, k8s = real_cluster.cluster, real_cluster.k8s
    cluster.install_crds(Path(__file__).resolve().parents[2] / "crds")
    hub = HuggingFaceHub(host=GATEWAY)
    hub.add_repo(REPO, dict(package_model_files()))
    hub.start()
    suffix = uuid.uuid4().hex[:6]
    store, namespace, name = f"secrets-{suffix}", f"team-{suffix}", "private"
    volume = tmp_path / "volume"
    volume.mkdir()
    # A host-run operator of an earlier module may have left its webhooks here, pointing at a dead port.
    delete_webhook_configurations(k8s.client)
    with chart_identity(k8s, cluster, binaries, tmp_path) as identity:
        role = next(d for d in identity.docs if d["kind"] == "ClusterRole")
        assert not [r for r in role["rules"] if "secrets" in r["resources"]], role["rules"]
        operator = OperatorProcess(str(identity.kubeconfig), tmp_path / "operator", resync_seconds=3,
                                   manage_webhooks=False, allow_host_path=True,
                                   extra_env={"MODELCACHE_NAMESPACE": identity.namespace,
                                              # the one Lease the chart's leader-election Role allows
                                              "MODELCACHE_LEASE_NAME": chart_lease_name(identity)})
        operator.start()
        try:
            k8s.create_store({"apiVersion": api.API_VERSION, "kind": api.STORE_KIND, "metadata": {"name": store},
                              "spec": {"hostPath": {"path": str(volume)}, "capacity": "10Gi",
                                       "namespaceSelector": {"matchLabels": {"team": suffix}}}})
            k8s.wait_store_ready(store, 60)
            k8s.ensure_namespace(namespace, {"team": suffix})
            wait_for(lambda: k8s.core.list_namespaced_service_account(namespace).items, 30,
                     describe="the namespace's default ServiceAccount")
            k8s.create_cache(namespace, {
                "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
                "spec": {"store": store,
                         "source": {"huggingface": {"repo": REPO, "endpoint": hub.url,
                                                    "tokenSecretRef": {"name": "hf-token", "key": "HF_TOKEN"}}},
                         "download": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS,
                                      "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                    "limits": {"memory": "2Gi"}}}}})

            def blocked(needle: str) -> tuple[str, str] | None:
                found = reason_of(k8s, namespace, name)
                return found if found and found[0] == "SecretNotFound" and needle in found[1] else None
            missing = wait_for(lambda: blocked('secret "hf-token" not found'), 180,
                               describe="SecretNotFound from the pod", diagnostics=operator.log_tail)
            assert k8s.get_cache(namespace, name)["status"]["phase"] == "Pending", missing
            download = k8s.get_cache(namespace, name)["status"]["downloadRef"]["name"]
            [job] = k8s.download_jobs(download)
            k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "hf-token"},
                                                          "stringData": {"WRONG_KEY": "hf_x"}})
            wait_for(lambda: blocked("couldn't find key HF_TOKEN"), 120, describe="SecretNotFound for the key",
                     diagnostics=operator.log_tail)
            k8s.core.patch_namespaced_secret("hf-token", namespace, {"stringData": {"HF_TOKEN": "hf_x"}})
            # The kubelet retries a CreateContainerConfigError with its back-off (up to five minutes).
            ready = k8s.wait_phase(namespace, name, "Ready", timeout=480, diagnostics=operator.log_tail)
            assert ready["status"]["resolvedRevision"]
            assert [j.metadata.uid for j in k8s.download_jobs(download)] == [job.metadata.uid]  # the same Job
            assert forbidden_lines(operator.log_text()) == []
        finally:
            k8s.delete_cache(namespace, name)
            k8s.delete_store(store)
            wait_for(lambda: k8s.get_store(store) is None, 60, describe="the store deleted",
                     diagnostics=operator.log_tail)
            operator.stop()
            hub.stop()
            k8s.core.delete_namespace(namespace)
