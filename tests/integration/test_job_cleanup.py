"""Finished download and cleanup Jobs expire (ttlSecondsAfterFinished), and the operator never runs them again:
their outcome is in the ModelDownload's status. The control plane's own TTL controller removes each Job here,
after the test shortens the Job's TTL (a mutable field) from the operator's hour to zero."""

from __future__ import annotations

import time
from typing import Any

import pytest

from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.api.names import ANNOTATION_RETRY, FINALIZER
from modelcache_operator.builders import jobs, naming
from tests.integration.test_modelcache import (
    ON_FAILING_NODE,
    Stores,
    cache_manifest,
    download_and_job,
    reporter_for,
    stores,  # noqa: F401  (fixture)
)
from tests.support.downloader_role import publish
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration


def expire(k8s: Cluster, job_name: str, operator: OperatorProcess) -> None:
    """Waits for the Job to finish, then lets the TTL controller remove it."""
    def finished() -> bool:
        job = k8s.batch.read_namespaced_job(job_name, OPERATOR_NAMESPACE)
        return any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or [])
    wait_for(finished, 60, describe=f"Job {job_name} finished", diagnostics=operator.log_tail)
    job = k8s.batch.read_namespaced_job(job_name, OPERATOR_NAMESPACE)
    assert job.spec.ttl_seconds_after_finished == jobs.FINISHED_JOB_TTL_SECONDS
    k8s.batch.patch_namespaced_job(job_name, OPERATOR_NAMESPACE, {"spec": {"ttlSecondsAfterFinished": 0}})
    wait_for(lambda: not k8s.batch.list_namespaced_job(
        OPERATOR_NAMESPACE, field_selector=f"metadata.name={job_name}").items, 60,
        describe=f"Job {job_name} removed by the TTL controller", diagnostics=operator.log_tail)


def jobs_named(k8s: Cluster, name: str) -> list[Any]:
    return k8s.batch.list_namespaced_job(OPERATOR_NAMESPACE, field_selector=f"metadata.name={name}").items


def resyncs(operator: OperatorProcess, count: int = 4) -> None:
    """Long enough for `count` level-based resyncs of every object: a Job that is due would be back by then."""
    time.sleep(count * operator.resync_seconds)


def test_expired_download_jobs_are_not_run_again(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                 local_cluster: LocalCluster, stores: Stores) -> None:  # noqa: F811
    store = stores.nfs(namespace)
    # Published: kwok completes the pod, the report says Published.
    k8s.create_cache(namespace, cache_manifest("kept", store))
    download, job = download_and_job(k8s, namespace, "kept", operator)
    publish(reporter_for(k8s, local_cluster, download), job.metadata.name)
    k8s.wait_phase(namespace, "kept", "Ready", diagnostics=operator.log_tail)
    expire(k8s, job.metadata.name, operator)
    # Failed: the pod on kwok's failing node exits 11 (NotFound). Another store, so not the same download.
    k8s.create_cache(namespace, cache_manifest("broken", stores.nfs(namespace), download=ON_FAILING_NODE))
    failed_download, failed_job = download_and_job(k8s, namespace, "broken", operator)
    k8s.wait_phase(namespace, "broken", "Failed", diagnostics=operator.log_tail)
    expire(k8s, failed_job.metadata.name, operator)

    resyncs(operator)
    assert jobs_named(k8s, job.metadata.name) == [] and jobs_named(k8s, failed_job.metadata.name) == []
    ready = k8s.get_download(OPERATOR_NAMESPACE, download["metadata"]["name"])
    failed = k8s.get_download(OPERATOR_NAMESPACE, failed_download["metadata"]["name"])
    assert ready is not None and failed is not None
    assert (ready["status"]["phase"], k8s.condition(ready, "Ready")["reason"]) == ("Ready", "Ready")
    assert (failed["status"]["phase"], k8s.condition(failed, "Ready")["reason"]) == ("Failed", "NotFound")
    assert k8s.get_cache(namespace, "kept")["status"]["phase"] == "Ready"
    assert k8s.get_cache(namespace, "broken")["status"]["phase"] == "Failed"


def test_a_failed_cleanup_is_kept_in_status_and_rerun_only_on_retry(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster,
        stores: Stores) -> None:  # noqa: F811
    """Retention removes a download whose folder is on kwok's failing node: its cleanup Job fails there."""
    store = stores.nfs(namespace, retention={"policy": "Delete", "ttlSecondsAfterUnused": 0, "keepRevisions": 0})
    k8s.create_cache(namespace, cache_manifest("gone", store, download=ON_FAILING_NODE))
    download, job = download_and_job(k8s, namespace, "gone", operator)
    publish(reporter_for(k8s, local_cluster, download), job.metadata.name)
    k8s.wait_phase(namespace, "gone", "Ready", diagnostics=operator.log_tail)
    name = download["metadata"]["name"]
    cleanup_name = naming.cleanup_job_name(name)
    k8s.delete_cache(namespace, "gone")

    def failure() -> dict[str, Any] | None:
        body = k8s.get_download(OPERATOR_NAMESPACE, name)
        return ((body or {}).get("status") or {}).get("cleanupFailed")
    first = wait_for(failure, 90, describe="the failed cleanup in status", diagnostics=operator.log_tail)
    assert first["retry"] == "" and cleanup_name in first["message"] and ANNOTATION_RETRY in first["message"]
    expire(k8s, cleanup_name, operator)
    resyncs(operator)
    assert jobs_named(k8s, cleanup_name) == [], "a failed cleanup ran again after its Job expired"
    assert failure() == first

    k8s.custom.patch_namespaced_custom_object(
        "modelcache.dev", "v1alpha2", OPERATOR_NAMESPACE, "modeldownloads", name,
        {"metadata": {"annotations": {ANNOTATION_RETRY: "1"}}})
    second = wait_for(lambda: (f := failure()) and f["retry"] == "1" and f, 90,
                      describe="the retried cleanup's failure in status", diagnostics=operator.log_tail)
    assert second["jobUid"] != first["jobUid"]
    events = k8s.core.list_namespaced_event(OPERATOR_NAMESPACE, field_selector=f"involvedObject.name={name}").items
    failures = sum(e.count or 1 for e in events if e.reason == "CleanupFailed")
    assert failures == 2, [(e.reason, e.count) for e in events]  # one per failed Job, not one per resync

    body = k8s.get_download(OPERATOR_NAMESPACE, name)
    assert body is not None and FINALIZER in body["metadata"]["finalizers"]
    k8s.custom.patch_namespaced_custom_object(
        "modelcache.dev", "v1alpha2", OPERATOR_NAMESPACE, "modeldownloads", name,
        {"metadata": {"finalizers": [f for f in body["metadata"]["finalizers"] if f != FINALIZER]}})
    wait_for(lambda: k8s.get_download(OPERATOR_NAMESPACE, name) is None, 30, describe="the download gone")
