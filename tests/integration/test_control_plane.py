"""The local control plane is real: each test fails if its component is missing."""

from __future__ import annotations

import uuid

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from tests.support.kube import Cluster, wait_for
from tests.support.serviceaccount import serviceaccount_client

pytestmark = pytest.mark.integration


def test_crd_cel_rule_rejects_and_names_the_field(k8s: Cluster, namespace: str) -> None:
    """kube-apiserver + the CRDs' x-kubernetes-validations (CEL): a spec-level rule of the ModelStore and a
    field-level one of the ModelCache."""
    name = f"two-backends-{uuid.uuid4().hex[:6]}"
    bad_store = {
        "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelStore", "metadata": {"name": name},
        "spec": {"nfs": {"server": "10.0.0.2", "path": "/m"}, "hostPath": {"path": "/m"}, "namespaceSelector": {}},
    }
    with pytest.raises(ApiException) as refused:
        k8s.create_store(bad_store)
    assert refused.value.status == 422
    assert "spec: Invalid value" in refused.value.body
    assert "exactly one backend must be set" in refused.value.body
    assert k8s.get_store(name) is None

    bad_cache = {
        "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache", "metadata": {"name": "old-storage"},
        "spec": {"source": {"huggingface": {"repo": "org/model"}},
                 "storage": {"nfs": {"server": "10.0.0.2", "path": "/m"}}},
    }
    with pytest.raises(ApiException) as refused:
        k8s.create_cache(namespace, bad_cache)
    assert refused.value.status == 422
    assert "spec.storage: Forbidden" in refused.value.body
    assert "spec.storage was removed in v1alpha2" in refused.value.body
    assert k8s.get_cache(namespace, "old-storage") is None


def test_job_pod_runs_on_fake_gpu_node_and_completes(k8s: Cluster, namespace: str) -> None:
    """kube-scheduler binds to a kwok GPU node, kwok runs the pod, the Job controller completes the Job."""
    job = {
        "metadata": {"name": "gpu-job"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "containers": [{"name": "main", "image": "busybox", "command": ["true"],
                            "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
        }}},
    }
    k8s.batch.create_namespaced_job(namespace, job)
    done = wait_for(lambda: k8s.batch.read_namespaced_job("gpu-job", namespace).status.succeeded, 60,
                    describe="Job gpu-job to succeed")
    assert done == 1
    pods = k8s.core.list_namespaced_pod(namespace, label_selector="job-name=gpu-job").items
    assert pods[0].spec.node_name.startswith("gpu-node-")
    conditions = {c.type: c.status for c in k8s.batch.read_namespaced_job("gpu-job", namespace).status.conditions}
    assert conditions.get("Complete") == "True"


def test_statefulset_pod_created_by_controller_manager(k8s: Cluster, namespace: str) -> None:
    sts = {
        "metadata": {"name": "web"},
        "spec": {"serviceName": "web", "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }
    k8s.apps.create_namespaced_stateful_set(namespace, sts)
    pod = wait_for(lambda: next(iter(k8s.core.list_namespaced_pod(namespace, label_selector="app=web").items), None),
                   60, describe="the StatefulSet's pod")
    assert pod.metadata.name == "web-0"
    assert pod.metadata.owner_references[0].kind == "StatefulSet"
    wait_for(lambda: k8s.core.read_namespaced_pod("web-0", namespace).status.phase == "Running", 60,
             describe="web-0 Running (kwok)")


def test_deleting_owner_garbage_collects_dependent(k8s: Cluster, namespace: str) -> None:
    owner = k8s.core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    k8s.core.create_namespaced_config_map(namespace, {"metadata": {"name": "dependent", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]}})
    k8s.core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool:
        try:
            k8s.core.read_namespaced_config_map("dependent", namespace)
        except ApiException as error:
            return bool(error.status == 404)
        return False
    assert wait_for(dependent_gone, 60, describe="garbage collection of the dependent ConfigMap")


def test_serviceaccount_token_without_rbac_is_refused(k8s: Cluster, namespace: str,
                                                     local_cluster: LocalCluster) -> None:
    """The TokenRequest API issues a real token; RBAC denies it everything it was not granted."""
    name = f"nobody-{uuid.uuid4().hex[:6]}"
    k8s.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    client = serviceaccount_client(k8s, local_cluster, namespace, name)
    limited = kubernetes.client.CoreV1Api(client)
    with pytest.raises(ApiException) as refused:
        limited.list_namespaced_secret(namespace)
    assert refused.value.status == 403
    assert f"system:serviceaccount:{namespace}:{name}" in refused.value.body
    # The same identity is authenticated: a self-review works, so the 403 came from RBAC, not from auth.
    review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:{name}"
