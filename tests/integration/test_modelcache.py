"""ModelCache reconcile on the real control plane: children, status, secrets, deletion, revisions, restarts."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcache_devcluster.cluster import FAILING_NODE, FAILING_NODE_TAINT, LocalCluster
from modelcache_operator.builders import naming
from tests.support.downloader_role import REVISION_A, REVISION_B, downloader_reporter, publish
from tests.support.kube import Cluster, wait_for
from tests.support.operator import TEST_IMAGE, OperatorProcess

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = "hf_TopSecretTokenValue_" + uuid.uuid4().hex


def example_caches(filename: str, namespace: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / filename).read_text()) if d]
    caches = [d for d in docs if d["kind"] == "ModelCache"]
    for cache in caches:
        cache["metadata"]["namespace"] = namespace
    return caches


def hf_token_secret(k8s: Cluster, namespace: str, key: str = "HF_TOKEN") -> None:
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "hf-token"}, "stringData": {key: TOKEN}})


def simple_cache(name: str, **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B", "revision": "main"}},
        "storage": {"nfs": {"server": "10.0.0.2", "path": f"/exports/{name}-{uuid.uuid4().hex[:6]}"},
                    "capacity": "10Gi"},
    }
    spec.update(spec_overrides)
    return {"apiVersion": "modelcache.dev/v1alpha1", "kind": "ModelCache", "metadata": {"name": name},
            "spec": spec}


def bind_dynamic_claim(k8s: Cluster, namespace: str, pvc_name: str, storage_class: str) -> None:
    """Plays the external CSI provisioner of a StorageClass: a matching PV, pre-bound to the claim."""
    k8s.core.create_persistent_volume({
        "metadata": {"name": f"pvc-{uuid.uuid4().hex[:12]}"},
        "spec": {"capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": storage_class,
                 "claimRef": {"namespace": namespace, "name": pvc_name},
                 "csi": {"driver": "filestore.csi.storage.gke.io", "volumeHandle": uuid.uuid4().hex}},
    })


BACKEND_EXAMPLES = {
    "ossfs2": "ossfs2-vllm-deepseek-r1.yaml",
    "nfs": "nfs-sglang.yaml",
    "efs": "efs.yaml",
    "storageClass": "storageclass.yaml",
    "modelscope": "modelscope-mirror.yaml",
}


@pytest.mark.parametrize("backend", sorted(BACKEND_EXAMPLES))
def test_example_reconciles_to_ready(backend: str, k8s: Cluster, namespace: str, operator: OperatorProcess,
                                     local_cluster: LocalCluster) -> None:
    cache = example_caches(BACKEND_EXAMPLES[backend], namespace)[0]
    name = cache["metadata"]["name"]
    if "tokenSecretRef" in json.dumps(cache):
        hf_token_secret(k8s, namespace)
    k8s.create_cache(namespace, cache)
    pvc_name = naming.pvc_name(name)
    if backend == "storageClass":
        wait_for(lambda: k8s.core.list_namespaced_persistent_volume_claim(
            namespace, field_selector=f"metadata.name={pvc_name}").items, 60, describe="the dynamic PVC")
        bind_dynamic_claim(k8s, namespace, pvc_name, "rwx-filestore")

    pvc = wait_for(lambda: _bound_pvc(k8s, namespace, pvc_name), 60, describe=f"PVC {pvc_name} Bound",
                   diagnostics=operator.log_tail)
    assert pvc.spec.access_modes == ["ReadWriteMany"]
    assert pvc.metadata.owner_references[0].kind == "ModelCache"
    if backend == "storageClass":
        assert pvc.spec.storage_class_name == "rwx-filestore"
    else:
        pv = k8s.core.read_persistent_volume(pvc.spec.volume_name)
        assert pv.metadata.name == naming.pv_name(namespace, name)
        assert pv.spec.claim_ref.namespace == namespace and pv.spec.claim_ref.name == pvc_name
        assert pv.spec.persistent_volume_reclaim_policy == "Retain"
        assert not pv.spec.storage_class_name  # "" (static binding) is omitted by the API
        _assert_pv_source(backend, pv, cache["spec"]["storage"])

    job = wait_for(lambda: next(iter(k8s.jobs(namespace, name)), None), 60, describe="the download Job",
                   diagnostics=operator.log_tail)
    container = job.spec.template.spec.containers[0]
    env = {e.name: e for e in container.env}
    source = cache["spec"]["source"]
    hub = "huggingface" if "huggingface" in source else "modelscope"
    assert env["MC_HUB"].value == hub
    assert env["MC_REPO"].value == source[hub].get("repo") or source[hub].get("model")
    assert env["MC_CACHE_NAME"].value == name and env["MC_JOB_NAME"].value == job.metadata.name
    if "endpoint" in source[hub]:
        assert env["MC_ENDPOINT"].value == source[hub]["endpoint"]
    if "tokenSecretRef" in source[hub]:
        assert env["MC_HUB_TOKEN"].value is None
        assert env["MC_HUB_TOKEN"].value_from.secret_key_ref.name == "hf-token"
    assert container.image == TEST_IMAGE
    assert not any("gpu" in k for k in (container.resources.limits or {}) | (container.resources.requests or {}))
    assert job.spec.template.spec.service_account_name == naming.downloader_identity_name(name)
    assert job.spec.pod_failure_policy.rules[0].action == "FailJob"
    assert job.spec.template.spec.volumes[0].persistent_volume_claim.claim_name == pvc_name

    publish(downloader_reporter(k8s, local_cluster, namespace, name), job.metadata.name)
    ready = k8s.wait_phase(namespace, name, "Ready", diagnostics=operator.log_tail)
    status = ready["status"]
    assert status["resolvedRevision"] == REVISION_A
    assert status["sizeBytes"] == 3 * 1024**3 and status["size"] == "3.0GiB" and status["fileCount"] == 7
    assert status["observedGeneration"] == ready["metadata"]["generation"]
    assert k8s.condition(ready, "Ready")["status"] == "True"
    assert k8s.condition(ready, "StorageReady")["reason"] == "PVCBound"
    columns = local_cluster.kubectl("get", "mc", name, "-n", namespace, "--no-headers")
    assert "Ready" in columns and REVISION_A in columns and "100%" in columns and "3.0GiB" in columns


def _bound_pvc(k8s: Cluster, namespace: str, name: str) -> Any:
    items = k8s.core.list_namespaced_persistent_volume_claim(namespace, field_selector=f"metadata.name={name}").items
    return items[0] if items and items[0].status.phase == "Bound" else None


def _wait_bound(k8s: Cluster, namespace: str, name: str) -> Any:
    return wait_for(lambda: _bound_pvc(k8s, namespace, name), 60, describe=f"PVC {namespace}/{name} Bound")


def _assert_pv_source(backend: str, pv: Any, storage: dict[str, Any]) -> None:
    if backend == "ossfs2":
        oss = storage["ossfs2"]
        assert pv.spec.csi.driver == "ossplugin.csi.alibabacloud.com"
        assert pv.spec.csi.volume_handle == pv.metadata.name
        assert pv.spec.csi.volume_attributes == {
            "fuseType": "ossfs2", "bucket": oss["bucket"], "path": oss["path"], "url": oss["url"],
            "otherOpts": oss["otherOpts"], "authType": "rrsa", "roleName": oss["roleName"]}
    elif backend in ("nfs", "modelscope"):
        assert pv.spec.nfs.server == storage["nfs"]["server"] and pv.spec.nfs.path == storage["nfs"]["path"]
        if storage["nfs"].get("mountOptions"):
            assert pv.spec.mount_options == storage["nfs"]["mountOptions"]
    elif backend == "efs":
        efs = storage["efs"]
        assert pv.spec.csi.driver == "efs.csi.aws.com"
        assert pv.spec.csi.volume_handle == f"{efs['fileSystemId']}::{efs['accessPointId']}"
    else:
        raise AssertionError(f"no PV expectations for {backend}")


def test_same_name_in_two_namespaces_gets_distinct_pvs(k8s: Cluster, operator: OperatorProcess) -> None:
    namespaces = [f"t-twin-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for ns in namespaces:
        k8s.core.create_namespace({"metadata": {"name": ns}})
        k8s.create_cache(ns, simple_cache("shared-name"))
    pvs = [_wait_bound(k8s, ns, naming.pvc_name("shared-name")).spec.volume_name for ns in namespaces]
    assert pvs[0] != pvs[1]
    for ns in namespaces:
        k8s.core.delete_namespace(ns)


def test_missing_secret_blocks_job_until_it_appears(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                   local_cluster: LocalCluster) -> None:
    cache = simple_cache("needs-token")
    cache["spec"]["source"]["huggingface"]["tokenSecretRef"] = {"name": "hf-token", "key": "HF_TOKEN"}
    k8s.create_cache(namespace, cache)
    pending = k8s.wait_phase(namespace, "needs-token", "Pending", diagnostics=operator.log_tail)
    ready = k8s.condition(pending, "Ready")
    assert ready["reason"] == "SecretNotFound" and "hf-token" in ready["message"]
    assert k8s.jobs(namespace, "needs-token") == []
    wait_for(lambda: "SecretNotFound" in _event_reasons(k8s, namespace, "needs-token"), 20,
             describe="a SecretNotFound event")

    hf_token_secret(k8s, namespace)
    job = wait_for(lambda: next(iter(k8s.jobs(namespace, "needs-token")), None), 30,
                   describe="the Job after the Secret appeared", diagnostics=operator.log_tail)
    publish(downloader_reporter(k8s, local_cluster, namespace, "needs-token"), job.metadata.name)
    k8s.wait_phase(namespace, "needs-token", "Ready")


def test_secret_without_the_key_is_reported(k8s: Cluster, namespace: str, operator: OperatorProcess) -> None:
    hf_token_secret(k8s, namespace, key="WRONG_KEY")
    cache = simple_cache("wrong-key")
    cache["spec"]["source"]["huggingface"]["tokenSecretRef"] = {"name": "hf-token", "key": "HF_TOKEN"}
    k8s.create_cache(namespace, cache)
    pending = k8s.wait_phase(namespace, "wrong-key", "Pending")
    assert "has no key HF_TOKEN" in k8s.condition(pending, "Ready")["message"]
    assert k8s.jobs(namespace, "wrong-key") == []


def _ready_cache(k8s: Cluster, cluster: LocalCluster, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    k8s.create_cache(namespace, simple_cache(name, **spec))
    job = wait_for(lambda: next(iter(k8s.jobs(namespace, name)), None), 60, describe=f"Job of {name}")
    publish(downloader_reporter(k8s, cluster, namespace, name), job.metadata.name)
    return k8s.wait_phase(namespace, name, "Ready")


def _gone(probe: Any) -> bool:
    try:
        probe()
    except Exception as error:
        return getattr(error, "status", None) == 404
    return False


def test_delete_with_retain_removes_objects_but_runs_no_cleanup(k8s: Cluster, namespace: str,
                                                              operator: OperatorProcess,
                                                              local_cluster: LocalCluster) -> None:
    _ready_cache(k8s, local_cluster, namespace, "keep-me")
    pv_name = naming.pv_name(namespace, "keep-me")
    k8s.delete_cache(namespace, "keep-me")
    wait_for(lambda: k8s.get_cache(namespace, "keep-me") is None, 60, describe="cache deleted",
             diagnostics=operator.log_tail)
    assert wait_for(lambda: _gone(lambda: k8s.core.read_persistent_volume(pv_name)), 60, describe="PV deleted")
    assert not any(j.metadata.labels.get("modelcache.dev/role") == "cleanup" for j in k8s.jobs(namespace, "keep-me"))


def test_delete_with_delete_policy_runs_cleanup_job_first(k8s: Cluster, namespace: str,
                                                         operator: OperatorProcess,
                                                         local_cluster: LocalCluster) -> None:
    storage = {"nfs": {"server": "10.0.0.2", "path": "/exports/wipe"}, "capacity": "10Gi", "reclaimPolicy": "Delete"}
    _ready_cache(k8s, local_cluster, namespace, "wipe-me", storage=storage)
    k8s.delete_cache(namespace, "wipe-me")
    cleanup = wait_for(lambda: _job(k8s, namespace, naming.cleanup_job_name("wipe-me")), 30,
                       describe="the cleanup Job", diagnostics=operator.log_tail)
    container = cleanup.spec.template.spec.containers[0]
    assert container.command == ["modelcache-operator", "purge", "--root", "/cache"]
    assert cleanup.spec.template.spec.volumes[0].persistent_volume_claim.claim_name == naming.pvc_name("wipe-me")
    wait_for(lambda: k8s.get_cache(namespace, "wipe-me") is None, 60, describe="cache deleted after cleanup",
             diagnostics=operator.log_tail)
    assert _job(k8s, namespace, naming.cleanup_job_name("wipe-me")) is None or \
        _job(k8s, namespace, naming.cleanup_job_name("wipe-me")).status.succeeded == 1
    # Events are posted asynchronously: wait for both rather than read them once.
    wait_for(lambda: {"CleanupStarted", "Deleted"} <= _event_reasons(k8s, namespace, "wipe-me"), 20,
             describe="CleanupStarted and Deleted events")


def _event_reasons(k8s: Cluster, namespace: str, name: str) -> set[str]:
    return {e.reason for e in k8s.events(namespace) if e.involved_object.name == name}


def _job(k8s: Cluster, namespace: str, name: str) -> Any:
    items = k8s.batch.list_namespaced_job(namespace, field_selector=f"metadata.name={name}").items
    return items[0] if items else None


def test_deletion_waits_while_pods_use_the_cache(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                local_cluster: LocalCluster) -> None:
    _ready_cache(k8s, local_cluster, namespace, "busy")
    k8s.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "server", "labels": {"modelcache.dev/inject": "true"},
                     "annotations": {"modelcache.dev/caches": "busy"}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm", "resources": {
            "limits": {"nvidia.com/gpu": "1", "memory": "16Gi"}}}]},
    })
    k8s.delete_cache(namespace, "busy")
    deleting = k8s.wait_phase(namespace, "busy", "Deleting", diagnostics=operator.log_tail)
    ready = wait_for(lambda: _condition_reason(k8s, namespace, "busy", "InUse"), 20, describe="InUse condition")
    assert "server" in ready["message"]
    assert deleting["metadata"]["deletionTimestamp"]
    assert _bound_pvc(k8s, namespace, naming.pvc_name("busy")) is not None
    k8s.core.delete_namespaced_pod("server", namespace, grace_period_seconds=0)
    wait_for(lambda: k8s.get_cache(namespace, "busy") is None, 60, describe="deletion after the pod left",
             diagnostics=operator.log_tail)


def _condition_reason(k8s: Cluster, namespace: str, name: str, reason: str) -> dict[str, Any] | None:
    cache = k8s.get_cache(namespace, name)
    if not cache or not cache.get("status"):
        return None
    condition = k8s.condition(cache, "Ready")
    return condition if condition["reason"] == reason else None


def test_revision_change_downloads_beside_the_old_one(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                     local_cluster: LocalCluster) -> None:
    first = _ready_cache(k8s, local_cluster, namespace, "rolling")
    old_job = first["status"]["jobName"]
    k8s.patch_cache(namespace, "rolling", {"spec": {"source": {"huggingface": {"revision": "v2.0"}}}})
    new_job = wait_for(lambda: next((j for j in k8s.jobs(namespace, "rolling") if j.metadata.name != old_job), None),
                       30, describe="the new revision's Job", diagnostics=operator.log_tail)
    downloading = k8s.wait_phase(namespace, "rolling", "Downloading")
    # Serving pods stay pinned to the old, complete revision until the new one is published.
    assert downloading["status"]["resolvedRevision"] == REVISION_A
    assert downloading["status"]["observedGeneration"] == 2
    assert {j.metadata.name for j in k8s.jobs(namespace, "rolling")} == {old_job, new_job.metadata.name}
    publish(downloader_reporter(k8s, local_cluster, namespace, "rolling"), new_job.metadata.name,
            revision=REVISION_B)
    ready = k8s.wait_phase(namespace, "rolling", "Ready")
    assert ready["status"]["resolvedRevision"] == REVISION_B


def test_failed_download_reports_reason_and_spec_fix_recovers(k8s: Cluster, namespace: str,
                                                             operator: OperatorProcess,
                                                             local_cluster: LocalCluster) -> None:
    """The Job's pod exits 11 (NotFound) with a termination message; podFailurePolicy fails the Job at once."""
    on_failing_node = {"nodeSelector": {"kubernetes.io/hostname": FAILING_NODE},
                       "tolerations": [{"key": FAILING_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}
    k8s.create_cache(namespace, simple_cache("typo", source={"huggingface": {"repo": "Qwen/Does-Not-Exist"}},
                                             download=on_failing_node))
    job = wait_for(lambda: next(iter(k8s.jobs(namespace, "typo")), None), 60, describe="Job")
    failed = k8s.wait_phase(namespace, "typo", "Failed", diagnostics=operator.log_tail)
    condition = k8s.condition(failed, "Ready")
    assert condition["reason"] == "NotFound" and "kwok failing node" in condition["message"]
    assert len(k8s.jobs(namespace, "typo")) == 1, "a permanent failure must not spawn retries"
    assert k8s.batch.read_namespaced_job(job.metadata.name, namespace).status.failed == 1
    wait_for(lambda: "NotFound" in _event_reasons(k8s, namespace, "typo"), 20, describe="a NotFound event")

    k8s.patch_cache(namespace, "typo", {"spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}},
                                                 "download": {"nodeSelector": None, "tolerations": None}}})
    fixed = wait_for(lambda: next((j for j in k8s.jobs(namespace, "typo") if j.metadata.name != job.metadata.name),
                                  None), 60, describe="a Job for the fixed spec")
    publish(downloader_reporter(k8s, local_cluster, namespace, "typo"), fixed.metadata.name)
    k8s.wait_phase(namespace, "typo", "Ready")


def test_operator_restarts_keep_children_and_never_duplicate_jobs(k8s: Cluster, namespace: str,
                                                                 operator: OperatorProcess,
                                                                 local_cluster: LocalCluster) -> None:
    hf_token_secret(k8s, namespace)
    cache = simple_cache("survivor")
    cache["spec"]["source"]["huggingface"]["tokenSecretRef"] = {"name": "hf-token", "key": "HF_TOKEN"}
    k8s.create_cache(namespace, cache)
    job = wait_for(lambda: next(iter(k8s.jobs(namespace, "survivor")), None), 60, describe="Job")
    pvc = _bound_pvc(k8s, namespace, naming.pvc_name("survivor")) or \
        wait_for(lambda: _bound_pvc(k8s, namespace, naming.pvc_name("survivor")), 60, describe="PVC")
    uids = {"job": job.metadata.uid, "pvc": pvc.metadata.uid,
            "pv": k8s.core.read_persistent_volume(pvc.spec.volume_name).metadata.uid}
    reporter = downloader_reporter(k8s, local_cluster, namespace, "survivor")

    operator.kill()  # while Downloading
    from modelcache_operator.api.v1alpha1 import DownloadReport
    reporter.send(DownloadReport(jobName=job.metadata.name, state="Downloading", resolvedRevision=REVISION_A,
                                 bytesDone=1, bytesTotal=10, filesDone=0, filesTotal=2), force=True)
    operator.start()
    k8s.wait_phase(namespace, "survivor", "Verifying")  # kwok completed the Job; the final report is pending
    operator.kill()  # while Verifying
    publish(reporter, job.metadata.name)
    operator.start()
    ready = k8s.wait_phase(namespace, "survivor", "Ready", diagnostics=operator.log_tail)
    operator.kill()  # while Ready
    operator.start()
    k8s.wait_phase(namespace, "survivor", "Ready")

    jobs = k8s.jobs(namespace, "survivor")
    assert [j.metadata.uid for j in jobs] == [uids["job"]]
    pvc_now = _bound_pvc(k8s, namespace, naming.pvc_name("survivor"))
    assert pvc_now.metadata.uid == uids["pvc"]
    assert k8s.core.read_persistent_volume(pvc_now.spec.volume_name).metadata.uid == uids["pv"]
    assert ready["status"]["resolvedRevision"] == REVISION_A


def test_token_never_appears_in_logs_events_status_or_job(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                          local_cluster: LocalCluster) -> None:
    hf_token_secret(k8s, namespace)
    cache = simple_cache("secretive")
    cache["spec"]["source"]["huggingface"]["tokenSecretRef"] = {"name": "hf-token", "key": "HF_TOKEN"}
    ready = _ready_cache_from(k8s, local_cluster, namespace, cache)
    encoded = base64.b64encode(TOKEN.encode()).decode()
    haystacks = {
        "operator log": operator.log_text(),
        "events": json.dumps([e.to_dict() for e in k8s.events(namespace)], default=str),
        "status": json.dumps(ready),
        "jobs": json.dumps([j.to_dict() for j in k8s.jobs(namespace, "secretive")], default=str),
    }
    for where, text in haystacks.items():
        assert TOKEN not in text, f"token leaked into the {where}"
        assert encoded not in text, f"base64 token leaked into the {where}"
    assert "MC_HUB_TOKEN" in haystacks["jobs"]  # the reference is there, the value is not


def _ready_cache_from(k8s: Cluster, cluster: LocalCluster, namespace: str, cache: dict[str, Any]) -> dict[str, Any]:
    name = cache["metadata"]["name"]
    k8s.create_cache(namespace, copy.deepcopy(cache))
    job = wait_for(lambda: next(iter(k8s.jobs(namespace, name)), None), 60, describe=f"Job of {name}")
    publish(downloader_reporter(k8s, cluster, namespace, name), job.metadata.name)
    return k8s.wait_phase(namespace, name, "Ready")


def test_idle_ready_cache_costs_no_writes(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                         local_cluster: LocalCluster) -> None:
    """Level-based resyncs of a Ready cache write nothing: the cache and its children keep their
    resourceVersions over several resync periods."""
    import time

    _ready_cache(k8s, local_cluster, namespace, "idle")
    time.sleep(operator.resync_seconds * 2)
    before = _versions(k8s, namespace, "idle")
    time.sleep(operator.resync_seconds * 3)
    assert _versions(k8s, namespace, "idle") == before


def _versions(k8s: Cluster, namespace: str, name: str) -> dict[str, str]:
    pvc = k8s.core.read_namespaced_persistent_volume_claim(naming.pvc_name(name), namespace)
    identity = naming.downloader_identity_name(name)
    cache = k8s.get_cache(namespace, name)
    assert cache is not None
    return {
        "cache": cache["metadata"]["resourceVersion"],
        "pvc": pvc.metadata.resource_version,
        "pv": k8s.core.read_persistent_volume(pvc.spec.volume_name).metadata.resource_version,
        "job": k8s.jobs(namespace, name)[0].metadata.resource_version,
        "serviceaccount": k8s.core.read_namespaced_service_account(identity, namespace).metadata.resource_version,
        "role": k8s.rbac.read_namespaced_role(identity, namespace).metadata.resource_version,
    }
