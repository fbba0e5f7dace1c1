"""A store's downloadJob options on live Jobs: accepted options reach the download Job as the apiserver
stores it; an option the apiserver refuses on the Job (the affinity is schemaless in the CRD) is a
JobRejected condition naming the store, not a crash loop."""

from __future__ import annotations

import pytest

from tests.integration.test_modelcache import (
    Stores,
    cache_manifest,
    download_and_job,
    stores,  # noqa: F401  (fixture)
    wait_reason,
)
from tests.support.kube import OPERATOR_NAMESPACE, Cluster
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration

OPTIONS = {
    "env": [{"name": "HTTPS_PROXY", "value": "http://proxy.corp:3128"}, {"name": "NO_PROXY", "value": ".svc"}],
    "caBundle": {"name": "corp-ca", "key": "bundle.pem"},
    "imagePullSecrets": ["registry-cred"],
    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}},
    "labels": {"cost-center": "ml"},
    "annotations": {"example.com/owner": "platform"},
}


def test_store_options_reach_the_live_job(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                          stores: Stores) -> None:  # noqa: F811
    store = stores.nfs(namespace, downloadJob=OPTIONS)
    k8s.create_cache(namespace, cache_manifest("proxied", store))
    _, job = download_and_job(k8s, namespace, "proxied", operator)
    assert job.metadata.namespace == OPERATOR_NAMESPACE
    pod = job.spec.template
    container = pod.spec.containers[0]
    env = {e.name: e.value for e in container.env}
    assert (env["HTTPS_PROXY"], env["NO_PROXY"], env["SSL_CERT_FILE"], env["REQUESTS_CA_BUNDLE"]) == (
        "http://proxy.corp:3128", ".svc", "/etc/modelcache/ca/ca.crt", "/etc/modelcache/ca/ca.crt")
    ca = next(v for v in pod.spec.volumes if v.name == "ca-bundle")
    assert (ca.config_map.name, ca.config_map.items[0].key) == ("corp-ca", "bundle.pem")
    assert [s.name for s in pod.spec.image_pull_secrets] == ["registry-cred"]
    assert pod.spec.affinity.node_affinity.preferred_during_scheduling_ignored_during_execution[0].weight == 1
    assert pod.metadata.labels["cost-center"] == "ml"
    assert pod.metadata.annotations == {"example.com/owner": "platform"}


def test_an_affinity_the_apiserver_refuses_is_a_condition(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                          stores: Stores) -> None:  # noqa: F811
    store = stores.nfs(namespace, downloadJob={"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}})
    k8s.create_cache(namespace, cache_manifest("refused", store))
    cache = wait_reason(k8s, namespace, "refused", "JobRejected", operator)
    message = k8s.condition(cache, "Ready")["message"]
    assert f'ModelStore "{store}" spec.downloadJob' in message and "nodeSelectorTerms" in message, message
    assert cache["status"]["phase"] == "Pending"
    assert k8s.download_jobs(cache["status"]["downloadRef"]["name"]) == []
