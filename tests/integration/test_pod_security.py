"""Every pod the operator creates or mutates is admitted in a namespace that enforces the `restricted` Pod
Security Standard: a private download Job's pod, its cleanup Job's pod, and a serving pod with the injected
init container and prewarm hook. Pod Security admission is the apiserver's, so the control plane decides
here exactly as in production; kwok then plays the kubelet."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.builders import naming
from tests.integration.test_modelcache import (
    Stores,
    cache_manifest,
    download_and_job,
    hf_token_secret,
    reporter_for,
    stores,  # noqa: F401  (fixture)
    with_token,
)
from tests.integration.test_webhook import dry_run, serving_pod
from tests.support.downloader_role import publish
from tests.support.kube import Cluster, wait_for
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version":
              "latest", "pod-security.kubernetes.io/warn": "restricted"}
SERVER_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
                   "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def pods_of(k8s: Cluster, namespace: str, job: str) -> list[Any]:
    return list(k8s.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


def admitted_pod(k8s: Cluster, namespace: str, job: str, operator: OperatorProcess) -> Any:
    def refusals() -> str:
        events = k8s.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={job}").items
        return "\n".join(f"{e.reason}: {e.message}" for e in events) + "\n" + operator.log_tail()
    return wait_for(lambda: next(iter(pods_of(k8s, namespace, job)), None), 60,
                    describe=f"a pod of Job {job} admitted under restricted", diagnostics=refusals)


def test_operator_pods_are_admitted_under_restricted(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                     local_cluster: LocalCluster,
                                                     stores: Stores) -> None:  # noqa: F811
    k8s.core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    store = stores.nfs(namespace, retention={"policy": "Delete", "ttlSecondsAfterUnused": 0, "keepRevisions": 0})
    hf_token_secret(k8s, namespace)
    # Its own token: a private download, whose Jobs run in this namespace.
    k8s.create_cache(namespace, with_token(cache_manifest("private", store)))
    download, job = download_and_job(k8s, namespace, "private", operator)
    assert job.metadata.namespace == namespace
    admitted_pod(k8s, namespace, job.metadata.name, operator)
    publish(reporter_for(k8s, local_cluster, download), job.metadata.name)
    k8s.wait_phase(namespace, "private", "Ready", diagnostics=operator.log_tail)

    pod = serving_pod("server", "private")
    pod["spec"]["containers"][0]["securityContext"] = copy.deepcopy(SERVER_SECURITY)
    pod["spec"]["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    created, refusal = wait_for(lambda: ((r := dry_run(k8s, namespace, pod))[0] is not None and r) or None, 30,
                                describe="the injected serving pod admitted",
                                diagnostics=lambda: repr(dry_run(k8s, namespace, pod)))
    assert refusal is None
    _, unsafe = dry_run(k8s, namespace, serving_pod("unsafe", "private"))  # no securityContext of its own
    assert unsafe is not None and "violates PodSecurity" in unsafe, "the namespace must enforce restricted"
    assert [c.name for c in created.spec.init_containers] == ["modelcache-tools"]
    assert created.spec.containers[0].lifecycle.post_start is not None

    k8s.delete_cache(namespace, "private")
    admitted_pod(k8s, namespace, naming.cleanup_job_name(download["metadata"]["name"]), operator)
