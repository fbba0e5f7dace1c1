"""Version skew: CRDs newer than the running operator (GitOps applies CRDs first; an image rollback leaves
them behind). The apiserver validates the new fields; the operator and its webhook, which do not know them,
still reconcile, read the downloader's report and admit pods."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.api import v1alpha2 as api
from tests.integration.conftest import CRD_DIR
from tests.integration.test_webhook import (
    Stores,
    cache_manifest,
    dry_run,
    pinned_to,
    serving_pod,
    settled,
    stores,  # noqa: F401  (fixture)
)
from tests.support.downloader_role import REVISION_A, download_job
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration

KNOB = {"futureKnob": {"type": "string"}}


def _newer(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD with fields a later API version adds: in specs, a nested spec object, status and the report."""
    crd = copy.deepcopy(crd)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    schema["spec"]["properties"].update(KNOB)
    schema["status"]["properties"].update(KNOB)
    if crd["spec"]["names"]["kind"] == api.KIND:
        schema["spec"]["properties"]["source"]["properties"]["huggingface"]["properties"].update(KNOB)
    if crd["spec"]["names"]["kind"] == api.DOWNLOAD_KIND:
        schema["status"]["properties"]["download"]["properties"]["chunkSize"] = {"type": "integer"}
    return crd


@pytest.fixture
def newer_crds(local_cluster: LocalCluster, k8s: Cluster, tmp_path: Path) -> Iterator[None]:
    for path in sorted(CRD_DIR.glob("*.yaml")):
        (tmp_path / path.name).write_text(yaml.safe_dump(_newer(yaml.safe_load(path.read_text()))))
    local_cluster.install_crds(tmp_path)
    try:
        yield
    finally:
        local_cluster.install_crds(CRD_DIR)


def skewed_ready_cache(k8s: Cluster, namespace: str, name: str, operator: OperatorProcess,
                       stores: Stores) -> tuple[str, dict[str, Any]]:  # noqa: F811
    """A store and a cache written with the newer CRD's fields, and the download's report carrying one, played
    to Ready; returns (store, download)."""
    store = stores.nfs(namespace, futureKnob="on")
    manifest = cache_manifest(name, store, futureKnob="on")
    manifest["spec"]["source"]["huggingface"]["futureKnob"] = "nearest"

    def admitted() -> Any:
        # Strict field validation: the apiserver refuses unknown fields, so this passes only once it serves
        # the newer schema, and the webhook must then admit what it does not know.
        return k8s.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL,
                                                          copy.deepcopy(manifest), field_validation="Strict")
    wait_for(_succeeds(admitted), 30, describe="the cache admitted under the newer CRD",
             diagnostics=operator.log_tail)
    cache = k8s.get_cache(namespace, name)
    assert cache is not None and cache["spec"]["futureKnob"] == "on"
    _, download = k8s.wait_download(namespace, name, diagnostics=operator.log_tail)
    job = download_job(k8s, download, diagnostics=operator.log_tail)

    # The downloader of a newer image reports a field this operator does not know.
    report = {"jobName": job.metadata.name, "state": "Published", "resolvedRevision": REVISION_A,
              "bytesDone": 2 * 1024**3, "bytesTotal": 2 * 1024**3, "filesDone": 3, "filesTotal": 3,
              "format": "safetensors", "chunkSize": 8 << 20}
    k8s.custom.patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, OPERATOR_NAMESPACE, api.DOWNLOAD_PLURAL, download["metadata"]["name"],
        {"status": {"download": report, "futureKnob": "set by a newer operator"}})
    stored = k8s.get_download(OPERATOR_NAMESPACE, download["metadata"]["name"])
    assert stored is not None and stored["status"]["download"]["chunkSize"] == 8 << 20  # the schema kept it
    ready = k8s.wait_phase(namespace, name, "Ready", diagnostics=operator.log_tail)
    assert ready["status"]["resolvedRevision"] == REVISION_A
    assert k8s.get_store(store)["status"]["phase"] == "Ready"
    return store, download


def failed_reconciles(log: str, *names: str) -> list[str]:
    """The session's operator also serves other tests: only failed reconciles of these objects count."""
    return [line for line in log.splitlines() if "Reconcile of" in line and any(name in line for name in names)]


def test_the_operator_and_webhook_work_under_a_newer_crd(newer_crds: None, k8s: Cluster, namespace: str,
                                                         operator: OperatorProcess,
                                                         stores: Stores) -> None:  # noqa: F811
    log_start = len(operator.log_text())
    store, download = skewed_ready_cache(k8s, namespace, "skew", operator, stores)
    pod = serving_pod("skewed", "skew")
    settled(k8s, namespace, pod, admitted=pinned_to(REVISION_A, "skew"))
    created, refusal = dry_run(k8s, namespace, pod)
    assert refusal is None and created.metadata.annotations["modelcache.dev/injected"]
    log = operator.log_text()[log_start:]
    failed = failed_reconciles(log, namespace, store, download["metadata"]["name"])
    assert "Extra inputs are not permitted" not in log and not failed, log


def test_an_image_rollback_restarts_the_operator_on_objects_it_does_not_know(
        newer_crds: None, k8s: Cluster, namespace: str, operator: OperatorProcess,
        stores: Stores) -> None:  # noqa: F811
    """GitOps rolling an image back: the newer CRD stays, objects already carry its fields (specs, status and
    the report), and the older operator starts on them: its first list, its webhook's views, then changes."""
    store, download = skewed_ready_cache(k8s, namespace, "rolled", operator, stores)
    generation = k8s.get_cache(namespace, "rolled")["metadata"]["generation"]
    operator.stop()
    log_start = len(operator.log_text())
    operator.start()  # the same code: it knows none of the newer fields, as the older image would not

    # Its webhook's views are built from its first list: a pod is admitted, pinned to the revision.
    pod = serving_pod("after-rollback", "rolled")
    settled(k8s, namespace, pod, admitted=pinned_to(REVISION_A, "rolled"))
    created, refusal = dry_run(k8s, namespace, pod)
    assert refusal is None and created.metadata.annotations["modelcache.dev/injected"]
    # A change after the rollback, still with the newer field: reconciled by level to the new generation.
    k8s.custom.patch_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, "rolled",
                                              {"spec": {"futureKnob": "off"}})
    def observed() -> dict[str, Any] | None:
        cache = k8s.get_cache(namespace, "rolled") or {}
        status = cache.get("status") or {}
        return cache if status.get("observedGeneration") == generation + 1 and status.get("phase") == "Ready" \
            else None
    cache = wait_for(observed, 30, describe="the change after the rollback observed, still Ready",
                     diagnostics=operator.log_tail)
    assert cache["spec"]["futureKnob"] == "off" and cache["status"]["resolvedRevision"] == REVISION_A
    assert k8s.get_store(store)["status"]["phase"] == "Ready"
    log = operator.log_text()[log_start:]
    failed = failed_reconciles(log, namespace, store, download["metadata"]["name"])
    assert "Extra inputs are not permitted" not in log and not failed, log


def _succeeds(attempt: Any) -> Any:
    def probe() -> bool:
        try:
            attempt()
        except ApiException as error:  # the apiserver serves the old schema for a moment: unknown field
            if "unknown field" not in str(error.body):
                raise  # a refusal by the webhook fails the test with its reason
            return False
        return True
    return probe
