"""The real apiserver calls the operator's webhooks over TLS: pods are injected with the published revision
(or wait for the one being downloaded), the not-ready policies hold, and ModelCaches and ModelStores that
may not use or must not share storage are refused with the reason."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.builders import naming
from tests.support.downloader_role import (
    REVISION_A,
    REVISION_B,
    download_job,
    downloader_reporter,
    publish,
    publish_cache,
)
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, nfs_store_manifest, refusal, wait_for
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration

INJECT = {"modelcache.dev/inject": "true"}
REPO = "Qwen/Qwen3-0.6B"
# No node matches: the download Job's pod never schedules, so the Job stays active and the cache's state
# depends only on the downloader's reports (kwok would otherwise complete the pod within seconds).
NEVER_SCHEDULED = {"nodeSelector": {"kubernetes.io/hostname": "no-such-node"}}


class Stores:
    """ModelStores with unique names for one test, deleted afterwards."""

    def __init__(self, k8s: Cluster):
        self.k8s = k8s
        self.names: list[str] = []

    def nfs(self, *namespaces: str, ready: bool = True, name: str | None = None, path: str | None = None,
            **spec: Any) -> str:
        name = name or f"nfs-{uuid.uuid4().hex[:6]}"
        self.k8s.create_store(nfs_store_manifest(name, namespaces, path, **spec))
        self.names.append(name)
        if ready:
            self.k8s.wait_store_ready(name, 60)
        return name

    def close(self) -> None:
        for name in self.names:
            self.k8s.delete_store(name)
        for name in self.names:
            self.wait_gone(name)

    def wait_gone(self, name: str) -> None:
        wait_for(lambda: self.k8s.get_store(name) is None, 30, describe=f"ModelStore {name} deleted")


@pytest.fixture
def stores(k8s: Cluster, operator: OperatorProcess) -> Iterator[Stores]:
    created = Stores(k8s)
    yield created
    created.close()


@pytest.fixture
def store(stores: Stores, namespace: str) -> str:
    """A fresh NFS store for the test's namespace: its downloads are this test's alone."""
    return stores.nfs(namespace)


def cache_manifest(name: str, store: str, policy: str = "wait", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
        "spec": {"source": {"huggingface": {"repo": REPO, "revision": "main"}}, "store": store,
                 "serving": {"notReadyPolicy": policy}, **spec},
    }


def ready_cache(k8s: Cluster, cluster: LocalCluster, operator: OperatorProcess, namespace: str, name: str,
                store: str) -> dict[str, Any]:
    """A cache whose download published REVISION_A (2 GiB)."""
    k8s.create_cache(namespace, cache_manifest(name, store))
    return publish_cache(k8s, cluster, namespace, name, size=2 * 1024**3, diagnostics=operator.log_tail)


def unpublished_cache(k8s: Cluster, operator: OperatorProcess, namespace: str, name: str, store: str,
                      policy: str) -> tuple[dict[str, Any], Any]:
    """A cache whose download Job is running and has reported nothing: (its ModelDownload, the Job)."""
    k8s.create_cache(namespace, cache_manifest(name, store, policy, download=NEVER_SCHEDULED))
    _, download = k8s.wait_download(namespace, name, diagnostics=operator.log_tail)
    job = download_job(k8s, download, diagnostics=operator.log_tail)

    def running() -> dict[str, Any] | None:
        cache = k8s.get_cache(namespace, name) or {}
        return cache if cache.get("status") and k8s.condition(cache, "Ready")["reason"] == "JobRunning" else None
    wait_for(running, 30, describe=f"ModelCache {name} waiting for its running Job", diagnostics=operator.log_tail)
    return download, job


def serving_pod(name: str, caches: str, labels: dict[str, str] | None = None, memory: str = "16Gi") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": INJECT if labels is None else labels,
                     "annotations": {"modelcache.dev/caches": caches}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai", "args": ["--model", "$(MODEL_DIR)"],
                                 "resources": {"limits": {"nvidia.com/gpu": "1", "memory": memory}}}]},
    }


def pins(pod: Any) -> dict[str, dict[str, str]]:
    """The webhook's annotations: {annotation suffix: {cache: value}}."""
    annotations = pod.metadata.annotations
    return {key: json.loads(annotations[f"modelcache.dev/{key}"]) for key in ("pinned-revisions", "folders",
                                                                             "downloads")}


def download_ref(cache: dict[str, Any], field: str = "downloadRef") -> str:
    ref = cache["status"][field]
    return f"{ref['namespace']}/{ref['name']}"


def dry_run(k8s: Cluster, namespace: str, pod: dict[str, Any]) -> tuple[Any, str | None]:
    """(the pod as admitted, None) or (None, the refusal) for a dry-run create: the webhook runs, nothing is
    stored."""
    try:
        return k8s.core.create_namespaced_pod(namespace, pod, dry_run="All"), None
    except ApiException as error:
        if error.status != 403:
            raise
        return None, str(error.body)


def settled(k8s: Cluster, namespace: str, pod: dict[str, Any], admitted: Callable[[Any], bool] | None = None,
            refused: Callable[[str], bool] | None = None) -> None:
    """Waits until dry runs of `pod` are admitted (or refused) as expected. The webhook reads caches from its
    watch, a moment behind the apiserver, where the tests read the status they expect it to act on."""
    def probe() -> bool:
        created, refusal_body = dry_run(k8s, namespace, pod)
        if refused is not None:
            return refusal_body is not None and refused(refusal_body)
        return created is not None and (admitted is None or admitted(created))
    wait_for(probe, 15, describe=f"the webhook's view to settle for pod {pod['metadata']['name']}",
             diagnostics=lambda: repr(dry_run(k8s, namespace, pod)))


def pinned_to(revision: str, cache: str, waiting: bool = False) -> Callable[[Any], bool]:
    def check(pod: Any) -> bool:
        annotations = pod.metadata.annotations or {}
        waits = any(c.name == f"modelcache-wait-{cache}" for c in pod.spec.init_containers or [])
        return bool(json.loads(annotations.get("modelcache.dev/pinned-revisions", "{}")) == {cache: revision}
                    and waits == waiting)
    return check


def _webhook_calls(operator: OperatorProcess) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in operator.webhook_metrics().splitlines()
               if line.startswith("modelcache_webhook_duration_seconds_count"))


# ----- pod injection -----

def test_statefulset_pods_come_back_injected(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                            local_cluster: LocalCluster, store: str) -> None:
    ready = ready_cache(k8s, local_cluster, operator, namespace, "qwen", store)
    assert ready["status"]["revisionPath"] == f"all/{REVISION_A}"
    template = serving_pod("ignored", "qwen")
    settled(k8s, namespace, template, pinned_to(REVISION_A, "qwen"))
    k8s.apps.create_namespaced_stateful_set(namespace, {
        "metadata": {"name": "server"},
        "spec": {"serviceName": "server", "replicas": 2, "selector": {"matchLabels": {"app": "server"}},
                 "template": {"metadata": {"labels": {"app": "server", **INJECT},
                                           "annotations": template["metadata"]["annotations"]},
                              "spec": template["spec"]}}})
    pods = wait_for(lambda: [p for p in k8s.core.list_namespaced_pod(namespace, label_selector="app=server").items]
                    if len(k8s.core.list_namespaced_pod(namespace, label_selector="app=server").items) == 2 else None,
                    60, describe="both StatefulSet pods", diagnostics=operator.log_tail)
    served_from = download_ref(ready, "servedFrom")
    assert served_from == download_ref(ready) and served_from.startswith(f"{OPERATOR_NAMESPACE}/")
    for pod in pods:
        assert pod.metadata.annotations["modelcache.dev/injected"] == "true"
        assert pins(pod) == {"pinned-revisions": {"qwen": REVISION_A}, "folders": {"qwen": f"all/{REVISION_A}"},
                             "downloads": {"qwen": served_from}}
        volume = next(v for v in pod.spec.volumes if v.name == "mc-qwen")
        assert volume.persistent_volume_claim.claim_name == naming.pvc_name("qwen")
        assert volume.persistent_volume_claim.read_only is True
        container = pod.spec.containers[0]
        mount = next(m for m in container.volume_mounts if m.name == "mc-qwen")
        assert (mount.mount_path, mount.sub_path, mount.read_only) == ("/models/qwen", f"all/{REVISION_A}", True)
        env = {e.name: e.value for e in container.env}
        assert env["MODEL_DIR"] == "/models/qwen" and env["HF_HUB_OFFLINE"] == "1"
        hook = container.lifecycle.post_start._exec.command
        assert hook[0] == "/bin/sh" and "/models/qwen" in hook
        assert [c.name for c in pod.spec.init_containers] == ["modelcache-tools"]
    assert pods[0].metadata.owner_references[0].kind == "StatefulSet"


def test_unlabelled_pod_is_never_sent_to_the_webhook(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                     local_cluster: LocalCluster, store: str) -> None:
    ready_cache(k8s, local_cluster, operator, namespace, "quiet", store)
    settled(k8s, namespace, serving_pod("opted-in", "quiet"), pinned_to(REVISION_A, "quiet"))
    before = _webhook_calls(operator)
    k8s.core.create_namespaced_pod(namespace, serving_pod("plain", "quiet", labels={}))
    pod = k8s.core.read_namespaced_pod("plain", namespace)
    assert not (pod.metadata.annotations or {}).get("modelcache.dev/injected")
    assert all(v.name != "mc-quiet" for v in pod.spec.volumes or [])
    assert _webhook_calls(operator) == before
    k8s.core.create_namespaced_pod(namespace, serving_pod("opted-in", "quiet"))
    assert _webhook_calls(operator) == before + 1  # the counter does move for a labelled pod


def test_wait_policy_pins_the_resolved_revision_and_gates_on_the_manifest(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster, store: str) -> None:
    download, job = unpublished_cache(k8s, operator, namespace, "slow", store, "wait")
    # Nothing published and the revision not resolved yet: the pod is refused and its controller will retry.
    early = serving_pod("early", "slow")
    settled(k8s, namespace, early, refused=lambda body: "still resolving its revision" in body)
    status, body = refusal(lambda: k8s.core.create_namespaced_pod(namespace, early))
    assert status == 403, body
    assert 'ModelCache \\"slow\\"' in body and "still resolving its revision" in body, body

    downloader_reporter(k8s, local_cluster, download["metadata"]["namespace"], download["metadata"]["name"]).send(
        api.DownloadReport(jobName=job.metadata.name, state="Downloading", requestedRevision="main",
                           resolvedRevision=REVISION_A, bytesDone=1, bytesTotal=100), force=True)
    pending = wait_for(lambda: (c := k8s.get_cache(namespace, "slow")) and c["status"].get("pendingRevisionPath")
                       and c, 20, describe="the pending revision's folder", diagnostics=operator.log_tail)
    assert pending["status"]["pendingRevisionPath"] == f"all/{REVISION_A}"
    assert "resolvedRevision" not in pending["status"]

    settled(k8s, namespace, serving_pod("waiter", "slow"), pinned_to(REVISION_A, "slow", waiting=True))
    k8s.core.create_namespaced_pod(namespace, serving_pod("waiter", "slow"))
    pod = k8s.core.read_namespaced_pod("waiter", namespace)
    assert pins(pod) == {"pinned-revisions": {"slow": REVISION_A}, "folders": {"slow": f"all/{REVISION_A}"},
                         "downloads": {"slow": download_ref(pending)}}
    assert [c.name for c in pod.spec.init_containers] == ["modelcache-tools", "modelcache-wait-slow"]
    wait = pod.spec.init_containers[1]
    # The whole claim, no subPath: the revision folder may not exist yet.
    claim_mount = next(m for m in wait.volume_mounts if m.name == "mc-slow")
    assert (claim_mount.mount_path, claim_mount.sub_path, claim_mount.read_only) == ("/models/slow", None, True)
    command = wait.command or []
    assert command[command.index("--dir") + 1] == f"/models/slow/all/{REVISION_A}"
    assert command[command.index("--timeout") + 1] == "21600"  # spec.download.activeDeadlineSeconds
    mount = next(m for m in pod.spec.containers[0].volume_mounts if m.name == "mc-slow")
    assert (mount.sub_path, mount.read_only) == (f"all/{REVISION_A}", True)


def test_revision_change_keeps_new_pods_on_the_complete_old_revision(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster, store: str) -> None:
    """While another revision downloads, new pods get the published one, whatever the phase, and no wait
    container; once the new one is published, new pods get it."""
    first = ready_cache(k8s, local_cluster, operator, namespace, "rolling", store)
    old = download_ref(first, "servedFrom")
    k8s.patch_cache(namespace, "rolling", {"spec": {"source": {"huggingface": {"revision": "v2.0"}},
                                                    "download": NEVER_SCHEDULED}})
    _, download = k8s.wait_download(namespace, "rolling", not_named=first["status"]["downloadRef"]["name"],
                                    diagnostics=operator.log_tail)
    job = download_job(k8s, download, diagnostics=operator.log_tail)
    reporter = downloader_reporter(k8s, local_cluster, download["metadata"]["namespace"], download["metadata"]["name"])
    reporter.send(api.DownloadReport(jobName=job.metadata.name, state="Downloading", requestedRevision="v2.0",
                                     resolvedRevision=REVISION_B, bytesDone=1, bytesTotal=100), force=True)
    rolling = wait_for(lambda: (c := k8s.get_cache(namespace, "rolling"))
                       and c["status"].get("pendingRevisionPath") == f"all/{REVISION_B}" and c, 30,
                       describe="the new revision downloading", diagnostics=operator.log_tail)
    assert rolling["status"]["phase"] == "Downloading"
    assert rolling["status"]["resolvedRevision"] == REVISION_A

    settled(k8s, namespace, serving_pod("during", "rolling"), pinned_to(REVISION_A, "rolling"))
    k8s.core.create_namespaced_pod(namespace, serving_pod("during", "rolling"))
    during = k8s.core.read_namespaced_pod("during", namespace)
    assert pins(during) == {"pinned-revisions": {"rolling": REVISION_A},
                            "folders": {"rolling": f"all/{REVISION_A}"}, "downloads": {"rolling": old}}
    assert [c.name for c in during.spec.init_containers] == ["modelcache-tools"]
    mount = next(m for m in during.spec.containers[0].volume_mounts if m.name == "mc-rolling")
    assert mount.sub_path == f"all/{REVISION_A}"

    publish(reporter, job.metadata.name, revision=REVISION_B)
    published = wait_for(lambda: (c := k8s.get_cache(namespace, "rolling")) and c["status"]["phase"] == "Ready"
                         and c["status"].get("resolvedRevision") == REVISION_B and c, 30,
                         describe="the new revision published", diagnostics=operator.log_tail)
    new = download_ref(published, "servedFrom")
    assert new == f"{download['metadata']['namespace']}/{download['metadata']['name']}" and new != old
    settled(k8s, namespace, serving_pod("after", "rolling"), pinned_to(REVISION_B, "rolling"))
    k8s.core.create_namespaced_pod(namespace, serving_pod("after", "rolling"))
    after = k8s.core.read_namespaced_pod("after", namespace)
    assert pins(after) == {"pinned-revisions": {"rolling": REVISION_B},
                           "folders": {"rolling": f"all/{REVISION_B}"}, "downloads": {"rolling": new}}


def test_deny_policy_refuses_with_the_reason(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                             store: str) -> None:
    unpublished_cache(k8s, operator, namespace, "strict", store, "deny")
    settled(k8s, namespace, serving_pod("refused", "strict"), refused=lambda body: "JobRunning" in body)
    status, body = refusal(lambda: k8s.core.create_namespaced_pod(namespace, serving_pod("refused", "strict")))
    assert status == 403, body
    assert f'ModelCache \\"strict\\" in namespace \\"{namespace}\\" is not Ready (phase Downloading; ' in body, body
    assert "Ready=False JobRunning" in body and "spec.serving.notReadyPolicy is deny" in body, body


def test_ignore_policy_admits_without_injection_and_warns(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                          local_cluster: LocalCluster, store: str) -> None:
    unpublished_cache(k8s, operator, namespace, "lenient", store, "ignore")
    settled(k8s, namespace, serving_pod("admitted", "lenient"),
            lambda pod: "modelcache.dev/injected" not in (pod.metadata.annotations or {}))
    result = local_cluster.run_kubectl("create", "-n", namespace, "-f", "-", "-o", "json",
                                       input_text=json.dumps({"apiVersion": "v1", "kind": "Pod",
                                                              **serving_pod("admitted", "lenient")}))
    assert result.returncode == 0, result.stderr
    pod = json.loads(result.stdout)
    assert all(v["name"] != "mc-lenient" for v in pod["spec"].get("volumes", []))
    assert "modelcache.dev/injected" not in pod["metadata"].get("annotations", {})
    assert "Warning:" in result.stderr and 'ModelCache "lenient"' in result.stderr
    assert "not injected because" in result.stderr and "is ignore" in result.stderr


def test_missing_cache_is_refused(k8s: Cluster, namespace: str, operator: OperatorProcess) -> None:
    status, body = refusal(lambda: k8s.core.create_namespaced_pod(namespace, serving_pod("orphan", "no-such-cache")))
    assert status == 403, body
    assert f'ModelCache \\"no-such-cache\\" not found in namespace \\"{namespace}\\"' in body, body


def test_another_namespaces_cache_is_refused(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                             local_cluster: LocalCluster, stores: Stores) -> None:
    """Even a Ready cache of that name elsewhere: a pod looks up caches in its own namespace only."""
    other = f"t-other-{uuid.uuid4().hex[:6]}"
    k8s.ensure_namespace(other)
    try:
        ready_cache(k8s, local_cluster, operator, other, "theirs", stores.nfs(other))
        status, body = refusal(lambda: k8s.core.create_namespaced_pod(
            namespace, serving_pod("cross", f"{other}/theirs")))
        assert status == 403, body
        assert f'names \\"{other}/theirs\\"' in body and "a pod cannot use another namespace's cache" in body, body
    finally:
        k8s.core.delete_namespace(other)


def test_memory_limit_below_model_size_warns(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                             local_cluster: LocalCluster, store: str) -> None:
    ready_cache(k8s, local_cluster, operator, namespace, "big", store)  # 2 GiB model, + max(2 GiB, 10%) overhead
    settled(k8s, namespace, serving_pod("tight", "big", memory="3Gi"), pinned_to(REVISION_A, "big"))
    result = local_cluster.run_kubectl("create", "-n", namespace, "-f", "-", "-o", "json",
                                       input_text=json.dumps({"apiVersion": "v1", "kind": "Pod",
                                                              **serving_pod("tight", "big", memory="3Gi")}))
    assert result.returncode == 0, result.stderr
    assert ('Warning: container "vllm" memory limit 3Gi (3.0 GiB) is below the prewarmed model size 2.0 GiB (big) '
            "+ 2.0 GiB overhead = 4.0 GiB") in result.stderr, result.stderr
    assert json.loads(result.stdout)["metadata"]["annotations"]["modelcache.dev/injected"] == "true"


# ----- validating webhooks -----

def test_modelcache_webhook_refuses_stores_the_namespace_may_not_use(k8s: Cluster, namespace: str,
                                                                     operator: OperatorProcess,
                                                                     stores: Stores) -> None:
    mine = stores.nfs(namespace)
    theirs = stores.nfs(f"t-elsewhere-{uuid.uuid4().hex[:6]}")
    refused = {
        "missing": refusal(lambda: k8s.create_cache(namespace, cache_manifest("missing", "no-such-store"))),
        "not allowed": refusal(lambda: k8s.create_cache(namespace, cache_manifest("not-allowed", theirs))),
    }
    expected = {
        "missing": 'ModelStore \\"no-such-store\\" (spec.store) does not exist',
        "not allowed": f'ModelStore \\"{theirs}\\" (spec.store) does not allow namespace \\"{namespace}\\" '
                       "(its spec.namespaceSelector); ask a cluster admin",
    }
    for what, says in expected.items():
        status, body = refused[what]
        assert (status, says in body, "validate-modelcaches.modelcache.dev" in body) == (422, True, True), \
            f"{what}: {status} {body}"
    assert k8s.get_cache(namespace, "missing") is None and k8s.get_cache(namespace, "not-allowed") is None
    # The namespace's own store is admitted.
    k8s.create_cache(namespace, cache_manifest("allowed", mine))
    assert k8s.get_cache(namespace, "allowed") is not None


def test_modelstore_webhook_refuses_hostpath_while_disabled(k8s: Cluster, operator: OperatorProcess) -> None:
    assert operator.allow_host_path is False
    name = f"host-{uuid.uuid4().hex[:6]}"
    status, body = refusal(lambda: k8s.create_store({
        "apiVersion": api.API_VERSION, "kind": api.STORE_KIND, "metadata": {"name": name},
        "spec": {"hostPath": {"path": f"/var/lib/{name}"}, "namespaceSelector": {}}}))
    assert status == 422, body
    assert "validate-modelstores.modelcache.dev" in body, body
    assert "spec.hostPath: this operator does not allow hostPath stores" in body, body
    assert "set the chart value stores.allowHostPath=true to allow them" in body, body
    assert k8s.get_store(name) is None


def test_modelstore_webhook_refuses_overlapping_roots(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                     stores: Stores) -> None:
    root = f"/exports/{uuid.uuid4().hex[:8]}"
    first = stores.nfs(namespace, path=root)
    cases = {
        "same": (f"{root}/", "is the same location as"),
        "inside": (f"{root}/team-b", "is inside"),
        "contains": (root.rsplit("/", 1)[0], "contains"),
    }
    for what, (path, relation) in cases.items():
        name = f"overlap-{what}-{uuid.uuid4().hex[:4]}"
        status, body = refusal(partial(k8s.create_store, nfs_store_manifest(name, [namespace], path)))
        normalised = path.rstrip("/") or "/"
        says = (f"the nfs root {normalised} {relation} the root {root} of ModelStore \\\"{first}\\\"; "
                "two stores must not share or nest their roots")
        assert (status, says in body) == (422, True), f"{what}: {status} {body}"
        assert k8s.get_store(name) is None
    # A sibling root, or the same path on another server, does not overlap.
    stores.nfs(namespace, path=f"{root}-sibling")
    stores.nfs(namespace, path=root, nfs={"server": "10.0.0.3", "path": root})


def test_modelstore_webhook_refuses_a_second_default_store(k8s: Cluster, namespace: str,
                                                           operator: OperatorProcess, stores: Stores) -> None:
    first = stores.nfs(namespace, default=True)
    second = f"default-{uuid.uuid4().hex[:6]}"
    status, body = refusal(lambda: k8s.create_store(nfs_store_manifest(second, [namespace], default=True)))
    assert status == 422, body
    assert (f'spec.default: ModelStore \\"{first}\\" is already the default store; mark at most one ModelStore '
            "default") in body, body
    assert k8s.get_store(second) is None
    # Not marked default, the same store is admitted; a cache without spec.store gets the default one.
    stores.nfs(namespace, name=second)
    manifest = cache_manifest("defaulted", first)
    del manifest["spec"]["store"]
    k8s.create_cache(namespace, manifest)
    cache, _ = k8s.wait_download(namespace, "defaulted", diagnostics=operator.log_tail)
    assert cache["status"]["store"] == first


# ----- failure policy and the webhook process -----

def test_failure_policy_blocks_opted_in_pods_while_the_operator_is_down(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster, store: str) -> None:
    ready_cache(k8s, local_cluster, operator, namespace, "steady", store)
    operator.kill()
    try:
        status, body = refusal(lambda: k8s.core.create_namespaced_pod(namespace, serving_pod("blocked", "steady")))
        assert status == 500 and 'failed calling webhook \\"inject-pods.modelcache.dev\\"' in body, body
        # ModelCache and ModelStore writes wait too: nothing would check or reconcile them now.
        status, body = refusal(lambda: k8s.create_cache(namespace, cache_manifest("later", store)))
        assert status == 500 and 'failed calling webhook \\"validate-modelcaches.modelcache.dev\\"' in body, body
        status, body = refusal(lambda: k8s.create_store(nfs_store_manifest(f"later-{uuid.uuid4().hex[:6]}",
                                                                           [namespace])))
        assert status == 500 and 'failed calling webhook \\"validate-modelstores.modelcache.dev\\"' in body, body
        # A spec change waits too; a metadata-only one (the retry annotation, a finalizer) skips the webhook.
        status, body = refusal(lambda: k8s.patch_cache(namespace, "steady", {"spec": {"serving": {
            "notReadyPolicy": "deny"}}}))
        assert status == 500 and 'failed calling webhook \\"validate-modelcaches.modelcache.dev\\"' in body, body
        k8s.patch_cache(namespace, "steady", {"metadata": {"annotations": {"team": "still-editable"}}})
        # Pods that did not opt in never meet the webhook, so they are unaffected.
        k8s.core.create_namespaced_pod(namespace, serving_pod("bystander", "steady", labels={}))
    finally:
        operator.start()
    wait_for(lambda: _created(k8s, namespace, serving_pod("after-restart", "steady")), 30,
             describe="a labelled pod admitted after the restart", diagnostics=operator.log_tail)
    after = k8s.core.read_namespaced_pod("after-restart", namespace)
    assert pins(after)["pinned-revisions"] == {"steady": REVISION_A}


def _created(k8s: Cluster, namespace: str, pod: dict[str, Any]) -> bool:
    try:
        k8s.core.create_namespaced_pod(namespace, pod)
    except ApiException:
        return False
    return True


def _own_operator(local_cluster: LocalCluster, workdir: Path) -> OperatorProcess:
    # manage_webhooks=False: the session operator's webhook configurations must keep pointing at it.
    operator = OperatorProcess(local_cluster.state.kubeconfig, workdir, manage_webhooks=False)
    operator.start()
    assert operator.process is not None
    return operator


def test_operator_exits_when_its_webhook_process_dies(local_cluster: LocalCluster, k8s: Cluster,
                                                      tmp_path: Path) -> None:
    operator = _own_operator(local_cluster, tmp_path)
    assert operator.process is not None
    try:
        [webhook] = operator.child_pids()
        os.kill(webhook, signal.SIGKILL)
        assert operator.process.wait(30) == 1, operator.log_tail()
        assert "admission webhook process exited" in operator.log_text()
    finally:
        operator.stop()


def test_webhook_process_dies_with_a_sigkilled_operator(local_cluster: LocalCluster, k8s: Cluster,
                                                        tmp_path: Path) -> None:
    operator = _own_operator(local_cluster, tmp_path)
    assert operator.process is not None
    try:
        [webhook] = operator.child_pids()
        os.kill(operator.process.pid, signal.SIGKILL)  # the operator alone, not its process group
        operator.process.wait(10)
        wait_for(lambda: not Path(f"/proc/{webhook}").exists() or "Z" in _state(webhook), 10,
                 describe="the orphaned webhook process to die")
    finally:
        operator.stop()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
