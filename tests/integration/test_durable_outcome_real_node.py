"""A durable outcome on the real node: the downloader's last status patch is dropped at the apiserver (a
ValidatingAdmissionPolicy refuses Published reports from service accounts), yet the cache ends Ready from
the report in the pod's termination message, written by the real container and kept by the real kubelet.
Deleting the finished Job afterwards re-downloads nothing and keeps the revision."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.integration.test_stores_real_node import MINILM, Env, env  # noqa: F401  (the module's fixture)
from tests.support.kube import wait_for

pytestmark = pytest.mark.integration
POLICY = "drop-published-download-reports"


@pytest.fixture
def dropped_reports(env: Env) -> Iterator[None]:  # noqa: F811
    adm = kubernetes.client.AdmissionregistrationV1Api(env.k8s.core.api_client)
    adm.create_validating_admission_policy({
        "metadata": {"name": POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["modelcache.dev"], "apiVersions": ["*"], "operations": ["UPDATE"],
                "resources": ["modeldownloads/status"]}]},
            "validations": [{
                "expression": "!request.userInfo.username.startsWith('system:serviceaccount:') || "
                              "!has(object.status) || !has(object.status.download) || "
                              "object.status.download.state != 'Published'",
                "message": "test: the downloader's Published report is dropped"}]}})
    adm.create_validating_admission_policy_binding({
        "metadata": {"name": POLICY}, "spec": {"policyName": POLICY, "validationActions": ["Deny"]}})
    wait_for(lambda: (adm.read_validating_admission_policy(POLICY).status or {}) and
             adm.read_validating_admission_policy(POLICY).status.observed_generation, 30,
             describe="the policy checked by the apiserver")
    try:
        yield
    finally:
        adm.delete_validating_admission_policy_binding(POLICY)
        adm.delete_validating_admission_policy(POLICY)


def job_pod_log(env: Env, job: Any) -> str:  # noqa: F811
    pods = env.k8s.core.list_namespaced_pod(job.metadata.namespace,
                                            label_selector=f"job-name={job.metadata.name}").items
    return "\n".join(env.k8s.core.read_namespaced_pod_log(p.metadata.name, p.metadata.namespace) for p in pods)


def test_lost_final_report_still_ends_ready_and_survives_the_job(env: Env, dropped_reports: None) -> None:  # noqa: F811
    store = env.store("durable")
    namespace = env.namespace("durable")
    env.cache(namespace, "minilm", MINILM, store)
    cache = env.ready(namespace, "minilm")
    ref = cache["status"]["downloadRef"]
    download = env.k8s.get_download(ref["namespace"], ref["name"])
    assert download is not None
    [job] = env.k8s.download_jobs(ref["name"])
    log = job_pod_log(env, job)
    assert "Published" in log and "Could not report status" in log, log  # the patch really was dropped
    # The operator took the report from the termination message and keeps it in status.
    assert download["status"]["download"]["state"] == "Published"
    assert download["status"]["resolvedRevision"] == cache["status"]["resolvedRevision"]
    served = dict(env.hub.bytes_served)

    batch = kubernetes.client.BatchV1Api(env.k8s.core.api_client)
    batch.delete_namespaced_job(job.metadata.name, job.metadata.namespace, propagation_policy="Background")
    wait_for(lambda: not env.k8s.download_jobs(ref["name"]), 60, describe="the finished Job gone")
    # Several operator resyncs (every 2 s) later: still no new Job, nothing fetched, still Ready.
    time.sleep(10)
    assert env.k8s.download_jobs(ref["name"]) == []
    assert dict(env.hub.bytes_served) == served
    after = env.k8s.get_cache(namespace, "minilm") or {}
    assert after["status"]["phase"] == "Ready"
    assert after["status"]["resolvedRevision"] == cache["status"]["resolvedRevision"]
