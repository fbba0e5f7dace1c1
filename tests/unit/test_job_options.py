"""A store's downloadJob options on the download and cleanup Jobs: added, never overriding the operator's."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.builders import jobs
from modelcache_operator.builders.job_options import (
    CA_BUNDLE_DIR,
    CA_BUNDLE_ENV,
    with_image_settings,
    with_store_options,
)
from tests.unit.test_builders import DOWNLOAD_BODY, NFS, download_spec, store

OPTIONS = api.DownloadJobOptions.model_validate({
    "env": [{"name": "HTTPS_PROXY", "value": "http://proxy.corp:3128"}, {"name": "NO_PROXY", "value": ".svc"}],
    "caBundle": {"name": "corp-ca"},
    "imagePullSecrets": ["registry-cred"],
    "priorityClassName": "downloads",
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
    "labels": {"cost-center": "ml", "app.kubernetes.io/managed-by": "someone-else"},
    "annotations": {"sidecar.istio.io/inject": "false"},
})


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = job["spec"]["template"]
    return template


@pytest.mark.parametrize("build", [
    lambda: jobs.download_job(DOWNLOAD_BODY, download_spec(token=True), store(nfs=NFS), "img:1"),
    lambda: jobs.cleanup_job(DOWNLOAD_BODY, download_spec(), "a" * 40, "img:1"),
])
def test_options_reach_the_jobs_pods(build: Any) -> None:
    plain = build()
    template = pod_of(with_store_options(plain, OPTIONS))
    spec, container = template["spec"], template["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HTTPS_PROXY"] == "http://proxy.corp:3128" and env["NO_PROXY"] == ".svc"
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == f"{CA_BUNDLE_DIR}/ca.crt"  # urllib/httpx, requests
    assert {"name": "ca-bundle", "mountPath": CA_BUNDLE_DIR, "readOnly": True} in container["volumeMounts"]
    assert {"name": "ca-bundle", "configMap": {"name": "corp-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} \
        in spec["volumes"]
    assert spec["imagePullSecrets"] == [{"name": "registry-cred"}]
    assert spec["priorityClassName"] == "downloads"
    assert spec["affinity"] == OPTIONS.affinity
    assert template["metadata"]["labels"]["cost-center"] == "ml"
    assert template["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modelcache-operator"
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert pod_of(plain) == pod_of(build())  # the builder's own Job is not changed


def test_no_options_leave_the_job_as_built() -> None:
    job = jobs.download_job(DOWNLOAD_BODY, download_spec(), store(nfs=NFS), "img:1")
    assert with_store_options(job, None) is job


def test_env_names_are_checked() -> None:
    """A malformed name fails the model; MC_* and the CA variables are the CRD's CEL rule to refuse."""
    with pytest.raises(ValidationError, match="name"):
        api.EnvVar.model_validate({"name": "1BAD", "value": "x"})
    rule = api.EnvVar.model_json_schema()["properties"]["name"]["x-kubernetes-validations"][0]["rule"]
    assert "startsWith('MC_')" in rule and all(f"'{name}'" in rule for name in CA_BUNDLE_ENV)


def test_the_charts_image_settings_and_the_stores_pull_secrets_combine() -> None:
    job = jobs.download_job(DOWNLOAD_BODY, download_spec(), store(hostPath={"path": "/srv/models"}), "img:1")
    configured = with_store_options(with_image_settings(job, "Always", ("chart-cred",)), OPTIONS)
    spec = pod_of(configured)["spec"]
    assert {c["imagePullPolicy"] for c in [*spec["initContainers"], *spec["containers"]]} == {"Always"}
    assert spec["imagePullSecrets"] == [{"name": "chart-cred"}, {"name": "registry-cred"}]
    assert "imagePullSecrets" not in pod_of(with_image_settings(job, "IfNotPresent", ()))["spec"]
