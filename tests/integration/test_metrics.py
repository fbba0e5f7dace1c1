"""The metrics a dashboard reads, scraped from the running operator's and webhook's /metrics while real
objects move: caches by phase, reconciles and their errors, download Job durations, and admissions by result."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from tests.integration.test_modelcache import (
    ON_FAILING_NODE,
    Stores,
    cache_manifest,
    download_and_job,
    ready_cache,
    reporter_for,
    stores,  # noqa: F401  (fixture)
)
from tests.integration.test_webhook import dry_run, serving_pod, settled
from tests.support.downloader_role import publish
from tests.support.kube import Cluster, wait_for
from tests.support.metrics import moved, samples, value
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration
POLICY = "refuse-claims-in-metrics-test"
REFUSAL = "claims are refused in this namespace"


def test_operator_series_move(k8s: Cluster, namespace: str, operator: OperatorProcess,
                              local_cluster: LocalCluster, stores: Stores) -> None:  # noqa: F811
    before = samples(operator.metrics())
    ready_cache(k8s, local_cluster, operator, namespace, cache_manifest("measured", stores.nfs(namespace)))
    k8s.create_cache(namespace, cache_manifest("failing", stores.nfs(namespace), download=ON_FAILING_NODE))
    download_and_job(k8s, namespace, "failing", operator)
    k8s.wait_phase(namespace, "failing", "Failed", diagnostics=operator.log_tail)

    moved(operator.metrics, before, "modelcache_caches", 1, phase="Ready")
    moved(operator.metrics, before, "modelcache_caches", 1, phase="Failed")
    moved(operator.metrics, before, "modelcache_reconcile_total", 10, result="ok")
    moved(operator.metrics, before, "modelcache_reconcile_duration_seconds_count", 10)
    moved(operator.metrics, before, "modelcache_api_writes_total", 1, kind="Job")
    moved(operator.metrics, before, "modelcache_download_job_duration_seconds_count", 1, result="succeeded")
    moved(operator.metrics, before, "modelcache_download_job_duration_seconds_count", 1, result="failed")
    # The gauge counts caches, not transitions: a deleted cache leaves its phase.
    failed = value(samples(operator.metrics()), "modelcache_caches", phase="Failed")
    k8s.delete_cache(namespace, "failing")
    wait_for(lambda: value(samples(operator.metrics()), "modelcache_caches", phase="Failed") == failed - 1, 30,
             describe="modelcache_caches{phase=Failed} to drop by one", diagnostics=operator.metrics)


@pytest.fixture
def claims_refused(k8s: Cluster, namespace: str) -> Iterator[Callable[[], None]]:
    """A ValidatingAdmissionPolicy (the apiserver's own, as a cluster's policy engine would have) refusing with
    403 every PersistentVolumeClaim created in `namespace`, in force once yielded; calling the yield lifts it."""
    admission = kubernetes.client.AdmissionregistrationV1Api(k8s.client)
    admission.create_validating_admission_policy({
        "metadata": {"name": POLICY},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
            "resources": ["persistentvolumeclaims"]}]},
            "validations": [{"expression": "false", "reason": "Forbidden", "message": REFUSAL}]}})
    admission.create_validating_admission_policy_binding({
        "metadata": {"name": POLICY},
        "spec": {"policyName": POLICY, "validationActions": ["Deny"], "matchResources": {"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}})
    probe = {"metadata": {"name": "probe"}, "spec": {"accessModes": ["ReadOnlyMany"],
                                                      "resources": {"requests": {"storage": "1Gi"}}}}

    def refusal() -> str | None:
        try:
            k8s.core.create_namespaced_persistent_volume_claim(namespace, probe, dry_run="All")
        except ApiException as error:
            return str(error.body) if error.status == 403 and REFUSAL in str(error.body) else None
        return None

    wait_for(refusal, 30, describe="the policy in force")

    def lift() -> None:
        for delete in (admission.delete_validating_admission_policy_binding,
                       admission.delete_validating_admission_policy):
            try:
                delete(POLICY)
            except ApiException as error:
                if error.status != 404:
                    raise
        wait_for(lambda: refusal() is None, 30, describe="the policy lifted")

    try:
        yield lift
    finally:
        lift()


def test_a_refused_write_moves_the_error_series(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                 local_cluster: LocalCluster, stores: Stores,  # noqa: F811
                                                 claims_refused: Callable[[], None]) -> None:
    before = samples(operator.metrics())
    cache = cache_manifest("refused", stores.nfs(namespace))
    k8s.create_cache(namespace, copy.deepcopy(cache))
    moved(operator.metrics, before, "modelcache_reconcile_errors_total", 1, error="http403")
    moved(operator.metrics, before, "modelcache_reconcile_total", 1, result="error")
    assert k8s.core.list_namespaced_persistent_volume_claim(namespace).items == []

    claims_refused()  # the policy lifted: the next reconcile goes through, by level
    download, job = download_and_job(k8s, namespace, "refused", operator)
    publish(reporter_for(k8s, local_cluster, download), job.metadata.name)
    k8s.wait_phase(namespace, "refused", "Ready", diagnostics=operator.log_tail)


def test_webhook_admissions_by_result(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                      local_cluster: LocalCluster, stores: Stores) -> None:  # noqa: F811
    before = samples(operator.webhook_metrics())
    ready_cache(k8s, local_cluster, operator, namespace, cache_manifest("admitted", stores.nfs(namespace)))
    settled(k8s, namespace, serving_pod("allowed", "admitted"))  # admitted once the webhook's view has it
    _, denied = dry_run(k8s, namespace, serving_pod("denied", "kube-system/someone-elses"))
    assert denied is not None and "another namespace" in denied
    moved(operator.webhook_metrics, before, "modelcache_webhook_duration_seconds_count", 1, result="allowed")
    moved(operator.webhook_metrics, before, "modelcache_webhook_duration_seconds_count", 1, result="denied")
    moved(operator.webhook_metrics, before, "modelcache_webhook_validate_duration_seconds_count", 1,
          result="allowed")
