"""Restricted Pod Security where the pods really run: in a namespace that enforces `restricted`, a serving pod
with the webhook's injected init container and postStart prewarm hook starts on the real node and becomes
Ready, the hook having run in it; a private download's cleanup Job runs there; a private download on a
hostPath store (whose Job needs a root init container) is refused with a reason, creating nothing; on a
storageClass store backed by a `local` PV, a download Job runs and publishes there. The admission side
of every pod the operator creates is in test_pod_security.py (kwok).
Real node: wrap in `flock /tmp/mc-real-node.lock`."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import StorageV1Api
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.node import REAL_NODE
from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.names import LABEL_INJECT
from modelcache_operator.builders import naming
from modelcache_operator.builders.jobs import RUN_AS_USER
from modelcache_operator.builders.pod_security import ENFORCE_LABEL
from modelcache_operator.webhook.injection import LOG_VOLUME
from tests.hubs import package_model_files
from tests.integration.test_pod_security import RESTRICTED
from tests.integration.test_real_node import SUMMARY
from tests.integration.test_stores_real_node import (
    MINILM,
    Env,
    delete_pod,
    env,  # noqa: F401  (fixture)
)
from tests.support.kube import wait_for
from tests.support.real_node import SERVING_IMAGE
from tests.support.real_node_flow import NODE_SELECTOR, TOLERATIONS, RealNodeCluster

pytestmark = pytest.mark.integration
# What a restricted namespace asks of a serving container; the injected ones bring their own.
SERVER_SECURITY = {"runAsNonRoot": True, "runAsUser": 65532, "allowPrivilegeEscalation": False,
                   "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def serving_pod(name: str, cache: str, security: dict[str, Any] | None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "server", "image": SERVING_IMAGE, "command": ["/opt/serve/bin/python", "-c",
                                                            "import time; time.sleep(3600)"],
        "resources": {"limits": {"memory": "256Mi"}}}
    if security:
        container["securityContext"] = security
    return {"metadata": {"name": name, "labels": {LABEL_INJECT: "true"},
                         "annotations": {"modelcache.dev/caches": cache}},
            "spec": {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS,
                     "terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
                     "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [container]}}


def ready(env: Env, namespace: str, name: str) -> Any:  # noqa: F811  (the imported fixture's name)
    pod = env.k8s.core.read_namespaced_pod(name, namespace)
    return pod if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []) else None


def test_injected_pod_runs_and_is_ready_under_restricted(env: Env,  # noqa: F811
                                                         real_cluster: RealNodeCluster) -> None:
    store = env.store("restricted")
    namespace = env.namespace("restricted")
    env.k8s.core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    env.cache(namespace, "minilm", MINILM, store)
    env.ready(namespace, "minilm")

    with pytest.raises(ApiException) as refusal:  # the namespace enforces restricted
        env.k8s.core.create_namespaced_pod(namespace, serving_pod("unsafe", "minilm", None))
    assert "violates PodSecurity" in str(refusal.value.body), refusal.value.body

    assert_served_under_restricted(env, real_cluster, namespace, "minilm")


def assert_served_under_restricted(env: Env, real_cluster: RealNodeCluster, namespace: str,  # noqa: F811
                                   cache: str) -> Any:
    """A restricted-clean serving pod of `cache` gets the injected init container and postStart prewarm, and
    becomes Ready on the real node, the hook having run in it as the restricted user."""
    env.k8s.core.create_namespaced_pod(namespace, serving_pod("server", cache, SERVER_SECURITY))
    pod = wait_for(lambda: ready(env, namespace, "server"), 180, interval=0.5,
                   describe="the injected serving pod Ready on the real node", diagnostics=env.diagnostics)
    assert [c.name for c in pod.spec.init_containers] == ["modelcache-tools"]
    tools = pod.status.init_container_statuses[0]
    assert tools.state.terminated is not None and tools.state.terminated.exit_code == 0
    assert pod.spec.containers[0].lifecycle.post_start is not None
    # The hook's summary is in the log file it writes.
    log_dir = real_cluster.cluster.node_layout.empty_dir(pod.metadata.uid, LOG_VOLUME)
    lines = [line for log in sorted(log_dir.glob("*")) for line in log.read_text().splitlines()]
    delete_pod(env, namespace, "server")
    summary = next((SUMMARY.match(line) for line in reversed(lines) if line.startswith("modelcache-prewarm")), None)
    assert summary, lines
    assert (summary["errors"], summary["timeout"]) == ("0", "false") and int(summary["files"]) > 0, summary[0]
    return pod


def test_a_private_download_on_hostpath_is_refused_under_restricted_and_its_cleanup_runs_there(
        env: Env) -> None:  # noqa: F811
    """A hostPath store's download Job needs a root init container (CAP_CHOWN): in a restricted namespace the
    cache says so and creates nothing. Once the namespace allows it, the private download runs there; back
    under restricted, its cleanup Job (restricted-clean) removes the revision from inside that namespace."""
    store = env.store("private", retention={"policy": "Delete", "ttlSecondsAfterUnused": 2, "keepRevisions": 0})
    namespace = env.namespace("private")
    env.k8s.core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    env.k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "hf-token"},
                                                      "stringData": {"HF_TOKEN": "hf_private"}})
    env.cache(namespace, "private", MINILM, store, tokenSecretRef={"name": "hf-token", "key": "HF_TOKEN"})

    def refused() -> str | None:
        cache = env.k8s.get_cache(namespace, "private") or {}
        conditions = (cache.get("status") or {}).get("conditions") or []
        ready: dict[str, Any] = next((c for c in conditions if c["type"] == "Ready"), {})
        return str(ready["message"]) if ready.get("reason") == "PodSecurityRestricted" else None
    message: str = wait_for(refused, 60, describe="the cache refused for its namespace's Pod Security",
                            diagnostics=env.diagnostics)
    assert f'ModelStore "{store}" is a hostPath store' in message and namespace in message, message
    assert env.k8s.custom.list_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.DOWNLOAD_PLURAL)["items"] == []
    assert env.k8s.core.list_namespaced_persistent_volume_claim(namespace).items == []

    env.k8s.core.patch_namespace(namespace, {"metadata": {"labels": {ENFORCE_LABEL: "baseline"}}})
    cache = env.ready(namespace, "private")  # by level, once the namespace allows the init container
    download, revision = cache["status"]["downloadRef"], cache["status"]["resolvedRevision"]
    assert download["namespace"] == namespace and download["shared"] is False
    folders = [p for p in env.root(store).rglob(revision) if p.is_dir()]
    assert len(folders) == 1, folders

    env.k8s.core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    env.k8s.delete_cache(namespace, "private")
    wait_for(lambda: not folders[0].exists(), 180, describe="the revision removed by the cleanup Job",
             diagnostics=env.diagnostics)
    wait_for(lambda: env.k8s.get_download(namespace, download["name"]) is None, 60,
             describe="the ModelDownload gone with its finalizer", diagnostics=env.diagnostics)
    events = [e for e in env.k8s.events(namespace) if e.involved_object.name == download["name"]]
    assert "RevisionRemoved" in [e.reason for e in events]
    # The cleanup Job's pod was admitted under restricted: no refusal was recorded for it.
    job_events = env.k8s.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={naming.cleanup_job_name(download['name'])}").items
    assert [e.message for e in job_events if e.reason == "FailedCreate"] == []
    assert "SuccessfulCreate" in [e.reason for e in job_events]


def local_storage_class(env: Env, root: Path) -> str:  # noqa: F811
    """What an admin pre-provisions on a node's disk: a StorageClass with no provisioner, binding on the first
    pod, and a static `local` PV on `root` of the real node. The kubelet applies a pod's fsGroup to a `local`
    volume (unlike hostPath), so a download Job needs no root init container to write there."""
    name = f"local-{uuid.uuid4().hex[:6]}"
    StorageV1Api(env.k8s.core.api_client).create_storage_class({
        "metadata": {"name": name}, "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Retain"})
    env.k8s.core.create_persistent_volume({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem",
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": name, "local": {"path": str(root)},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": key, "operator": "In", "values": [value]}
                     for key, value in NODE_SELECTOR.items()]}]}}}})
    return name


def test_a_private_download_on_a_local_storage_class_runs_and_serves_under_restricted(
        env: Env, real_cluster: RealNodeCluster) -> None:  # noqa: F811
    """A storageClass store (every download private, its Job in the cache's namespace) on a `local` PV: in a
    namespace enforcing restricted, the download Job's pod is admitted, runs as the image's non-root user with
    no init container, downloads from the loopback hub and publishes; the cache is Ready and a serving pod there
    is injected, prewarmed and Ready."""
    root = env.volume / f"local-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True)  # root-owned 0755, as a fresh disk: only fsGroup lets the downloader write
    storage_class = local_storage_class(env, root)
    store = f"local-{uuid.uuid4().hex[:6]}"
    env.k8s.create_store({"apiVersion": api.API_VERSION, "kind": api.STORE_KIND, "metadata": {"name": store},
                          "spec": {"storageClass": {"name": storage_class}, "capacity": "10Gi",
                                   "namespaceSelector": {"matchLabels": {"stores-test": "yes"}}}})
    env.stores.append(store)
    env.k8s.wait_store_ready(store)
    namespace = env.namespace("restricted-local")
    env.k8s.core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    served_before = dict(env.hub.bytes_served)
    env.cache(namespace, "minilm", MINILM, store)

    cache = env.ready(namespace, "minilm")
    download, revision = cache["status"]["downloadRef"], cache["status"]["resolvedRevision"]
    assert download["namespace"] == namespace and download["shared"] is False
    claim = env.k8s.core.read_namespaced_persistent_volume_claim(naming.store_claim_name(store), namespace)
    assert (claim.status.phase, claim.spec.volume_name) == ("Bound", storage_class)
    # Admitted under restricted: the Job created its pod at once, and that pod ran the downloader only.
    job = naming.download_job_name(download["name"])
    job_events = env.k8s.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={job}").items
    assert [e.message for e in job_events if e.reason == "FailedCreate"] == []
    assert "SuccessfulCreate" in [e.reason for e in job_events]
    def succeeded() -> Any:  # the cache is Ready on the Job's report, a moment before its pod exits
        pods = env.k8s.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
        return pods if [p.status.phase for p in pods] == ["Succeeded"] else None
    [job_pod] = wait_for(succeeded, 60, describe="the download Job's one pod Succeeded", diagnostics=env.diagnostics)
    assert job_pod.spec.node_name == REAL_NODE
    assert not job_pod.spec.init_containers
    assert job_pod.spec.security_context.run_as_non_root and job_pod.spec.security_context.fs_group == RUN_AS_USER
    # On the node's disk: the kubelet gave the volume to the fsGroup, the downloader wrote as its own user.
    assert root.stat().st_gid == RUN_AS_USER
    [folder] = [p for p in root.rglob(revision) if p.is_dir()]
    published = [p for p in folder.rglob("*") if p.is_file()]
    assert {(p.stat().st_uid, p.stat().st_gid) for p in published} == {(RUN_AS_USER, RUN_AS_USER)}
    # Every model file came from the loopback hub, once, and is on the disk byte for byte.
    served = {path: env.hub.bytes_served[path] - served_before.get(path, 0) for path in package_model_files()}
    assert served == {path: source.stat().st_size for path, source in package_model_files().items()}
    assert all((folder / path).read_bytes() == source.read_bytes() for path, source in package_model_files().items())

    pod = assert_served_under_restricted(env, real_cluster, namespace, "minilm")
    mounted = [v for v in pod.spec.volumes if v.persistent_volume_claim is not None]
    assert [(v.persistent_volume_claim.claim_name, v.persistent_volume_claim.read_only) for v in mounted] == [
        (claim.metadata.name, True)]
