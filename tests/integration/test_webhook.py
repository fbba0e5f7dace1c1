"""The real apiserver calls the operator's webhooks over TLS: pods are injected, policies hold, and
ModelCaches that clash on storage are refused."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.api.v1alpha2 import DownloadReport
from modelcache_operator.builders import naming
from tests.support.downloader_role import REVISION_A, downloader_reporter, publish
from tests.support.kube import Cluster, wait_for
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration

INJECT = {"modelcache.dev/inject": "true"}


def cache_manifest(name: str, policy: str = "wait") -> dict[str, Any]:
    return {
        "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache", "metadata": {"name": name},
        "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}},
                 "storage": {"nfs": {"server": "10.0.0.2", "path": f"/exports/{uuid.uuid4().hex}"},
                             "capacity": "10Gi"},
                 "serving": {"notReadyPolicy": policy}},
    }


def ready_cache(k8s: Cluster, cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    k8s.create_cache(namespace, cache_manifest(name))
    job = wait_for(lambda: next(iter(k8s.jobs(namespace, name)), None), 60, describe=f"Job of {name}")
    publish(downloader_reporter(k8s, cluster, namespace, name), job.metadata.name, size=2 * 1024**3)
    return k8s.wait_phase(namespace, name, "Ready")


def serving_pod(name: str, caches: str, labels: dict[str, str] | None = None, memory: str = "16Gi") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": INJECT if labels is None else labels,
                     "annotations": {"modelcache.dev/caches": caches}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai", "args": ["--model", "$(MODEL_DIR)"],
                                 "resources": {"limits": {"nvidia.com/gpu": "1", "memory": memory}}}]},
    }


def _webhook_calls(operator: OperatorProcess) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in operator.webhook_metrics().splitlines()
               if line.startswith("modelcache_webhook_duration_seconds_count"))


def test_statefulset_pods_come_back_injected(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                            local_cluster: LocalCluster) -> None:
    ready_cache(k8s, local_cluster, namespace, "qwen")
    template = serving_pod("ignored", "qwen")
    k8s.apps.create_namespaced_stateful_set(namespace, {
        "metadata": {"name": "server"},
        "spec": {"serviceName": "server", "replicas": 2, "selector": {"matchLabels": {"app": "server"}},
                 "template": {"metadata": {"labels": {"app": "server", **INJECT},
                                           "annotations": template["metadata"]["annotations"]},
                              "spec": template["spec"]}}})
    pods = wait_for(lambda: [p for p in k8s.core.list_namespaced_pod(namespace, label_selector="app=server").items]
                    if len(k8s.core.list_namespaced_pod(namespace, label_selector="app=server").items) == 2 else None,
                    60, describe="both StatefulSet pods", diagnostics=operator.log_tail)
    for pod in pods:
        assert pod.metadata.annotations["modelcache.dev/injected"] == "true"
        assert json.loads(pod.metadata.annotations["modelcache.dev/pinned-revisions"]) == {"qwen": REVISION_A}
        volume = next(v for v in pod.spec.volumes if v.name == "mc-qwen")
        assert volume.persistent_volume_claim.claim_name == naming.pvc_name("qwen")
        assert volume.persistent_volume_claim.read_only is True
        container = pod.spec.containers[0]
        mount = next(m for m in container.volume_mounts if m.name == "mc-qwen")
        assert (mount.mount_path, mount.sub_path, mount.read_only) == ("/models/qwen", REVISION_A, True)
        env = {e.name: e.value for e in container.env}
        assert env["MODEL_DIR"] == "/models/qwen" and env["HF_HUB_OFFLINE"] == "1"
        hook = container.lifecycle.post_start._exec.command
        assert hook[0] == "/bin/sh" and "/models/qwen" in hook
        assert pod.spec.init_containers[0].name == "modelcache-tools"
    assert pods[0].metadata.owner_references[0].kind == "StatefulSet"


def test_unlabelled_pod_is_never_sent_to_the_webhook(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                     local_cluster: LocalCluster) -> None:
    ready_cache(k8s, local_cluster, namespace, "quiet")
    before = _webhook_calls(operator)
    k8s.core.create_namespaced_pod(namespace, serving_pod("plain", "quiet", labels={}))
    pod = k8s.core.read_namespaced_pod("plain", namespace)
    assert not (pod.metadata.annotations or {}).get("modelcache.dev/injected")
    assert all(v.name != "mc-quiet" for v in pod.spec.volumes or [])
    assert _webhook_calls(operator) == before
    k8s.core.create_namespaced_pod(namespace, serving_pod("opted-in", "quiet"))
    assert _webhook_calls(operator) == before + 1  # the counter does move for a labelled pod


def test_wait_policy_pins_the_resolved_revision_and_gates_on_the_manifest(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster) -> None:
    k8s.create_cache(namespace, cache_manifest("slow", "wait"))
    job = wait_for(lambda: next(iter(k8s.jobs(namespace, "slow")), None), 60, describe="Job")
    # Nothing resolved yet: the pod is refused and its controller will retry.
    k8s.wait_phase(namespace, "slow", "Verifying")
    with pytest.raises(ApiException) as refused:
        k8s.core.create_namespaced_pod(namespace, serving_pod("early", "slow"))
    assert refused.value.status == 403 and "slow" in refused.value.body
    downloader_reporter(k8s, local_cluster, namespace, "slow").send(DownloadReport(
        jobName=job.metadata.name, state="Downloading", requestedRevision="main", resolvedRevision=REVISION_A,
        bytesDone=1, bytesTotal=100), force=True)
    wait_for(lambda: ((k8s.get_cache(namespace, "slow") or {}).get("status") or {}).get("download"), 10,
             describe="the download report")
    k8s.core.create_namespaced_pod(namespace, serving_pod("waiter", "slow"))
    pod = k8s.core.read_namespaced_pod("waiter", namespace)
    waits = [c for c in pod.spec.init_containers if c.name == "modelcache-wait-slow"]
    assert len(waits) == 1 and REVISION_A in " ".join(waits[0].command or [])
    mount = next(m for m in pod.spec.containers[0].volume_mounts if m.name == "mc-slow")
    assert mount.sub_path == REVISION_A


def test_deny_policy_refuses_with_the_reason(k8s: Cluster, namespace: str, operator: OperatorProcess) -> None:
    k8s.create_cache(namespace, cache_manifest("strict", "deny"))
    k8s.wait_phase(namespace, "strict", "Verifying")
    with pytest.raises(ApiException) as refused:
        k8s.core.create_namespaced_pod(namespace, serving_pod("refused", "strict"))
    assert refused.value.status == 403
    assert "strict" in refused.value.body and "Verifying" in refused.value.body


def test_ignore_policy_admits_without_injection_and_warns(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                                          local_cluster: LocalCluster) -> None:
    k8s.create_cache(namespace, cache_manifest("lenient", "ignore"))
    k8s.wait_phase(namespace, "lenient", "Verifying")
    result = local_cluster.run_kubectl("create", "-n", namespace, "-f", "-", "-o", "json",
                                   input_text=json.dumps({"apiVersion": "v1", "kind": "Pod",
                                                          **serving_pod("admitted", "lenient")}))
    pod = json.loads(result.stdout)
    assert all(v["name"] != "mc-lenient" for v in pod["spec"].get("volumes", []))
    assert "Warning:" in result.stderr and "lenient" in result.stderr


def test_missing_cache_is_refused(k8s: Cluster, namespace: str, operator: OperatorProcess) -> None:
    with pytest.raises(ApiException) as refused:
        k8s.core.create_namespaced_pod(namespace, serving_pod("orphan", "no-such-cache"))
    assert refused.value.status == 403 and "no-such-cache" in refused.value.body


def test_memory_limit_below_model_size_warns(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                             local_cluster: LocalCluster) -> None:
    ready_cache(k8s, local_cluster, namespace, "big")  # 2 GiB model, + max(2 GiB, 10%) overhead
    result = local_cluster.run_kubectl("create", "-n", namespace, "-f", "-", "-o", "json",
                                   input_text=json.dumps({"apiVersion": "v1", "kind": "Pod",
                                                          **serving_pod("tight", "big", memory="3Gi")}))
    assert "Warning:" in result.stderr and "memory" in result.stderr
    assert json.loads(result.stdout)["metadata"]["annotations"]["modelcache.dev/injected"] == "true"


def test_validating_webhook_refuses_a_second_cache_on_the_same_storage(k8s: Cluster, namespace: str,
                                                                       operator: OperatorProcess) -> None:
    first = cache_manifest("owner-of-path")
    k8s.create_cache(namespace, first)
    wait_for(lambda: k8s.get_cache(namespace, "owner-of-path"), 10, describe="first cache")
    second = cache_manifest("squatter")
    second["spec"]["storage"] = first["spec"]["storage"]

    def refused_message() -> str | None:
        try:
            k8s.create_cache(namespace, second)
        except ApiException as error:
            return str(error.body)
        k8s.delete_cache(namespace, "squatter")  # the index had not seen the first cache yet
        return None
    message = wait_for(refused_message, 20, describe="the clash to be refused")
    assert "owner-of-path" in message and "spec.storage" in message


def test_failure_policy_blocks_opted_in_pods_while_the_operator_is_down(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster) -> None:
    ready_cache(k8s, local_cluster, namespace, "steady")
    operator.kill()
    try:
        with pytest.raises(ApiException) as refused:
            k8s.core.create_namespaced_pod(namespace, serving_pod("blocked", "steady"))
        assert refused.value.status == 500 and "failed calling webhook" in refused.value.body
        # Pods that did not opt in never meet the webhook, so they are unaffected.
        k8s.core.create_namespaced_pod(namespace, serving_pod("bystander", "steady", labels={}))
    finally:
        operator.start()
    wait_for(lambda: _created(k8s, namespace, serving_pod("after-restart", "steady")), 30,
             describe="a labelled pod admitted after the restart", diagnostics=operator.log_tail)


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


def test_operator_exits_when_its_webhook_process_dies(local_cluster: LocalCluster, tmp_path: Path) -> None:
    operator = _own_operator(local_cluster, tmp_path)
    assert operator.process is not None
    try:
        [webhook] = operator.child_pids()
        os.kill(webhook, signal.SIGKILL)
        assert operator.process.wait(30) == 1, operator.log_tail()
        assert "admission webhook process exited" in operator.log_text()
    finally:
        operator.stop()


def test_webhook_process_dies_with_a_sigkilled_operator(local_cluster: LocalCluster, tmp_path: Path) -> None:
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
