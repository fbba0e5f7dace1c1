"""Plays the download Job's part against the real apiserver with the downloader's own reporting code,
authenticated as the per-download downloader ServiceAccount (so its least-privilege Role is exercised too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.api.v1alpha2 import DownloadReport
from modelcache_operator.builders import naming
from modelcache_operator.downloader.report import KubernetesStatusReporter
from tests.support.kube import Cluster, wait_for
from tests.support.serviceaccount import serviceaccount_client

REVISION_A = "a" * 40
REVISION_B = "b" * 40


def downloader_reporter(k8s: Cluster, cluster: LocalCluster, namespace: str,
                        download: str) -> KubernetesStatusReporter:
    """Reports for the ModelDownload `namespace/download` as its Job's ServiceAccount."""
    client = serviceaccount_client(k8s, cluster, namespace, naming.downloader_identity_name(download))
    return KubernetesStatusReporter(client, namespace, download, min_interval=0)


def publish(reporter: KubernetesStatusReporter, job_name: str, revision: str = REVISION_A,
            size: int = 3 * 1024**3, files: int = 7) -> None:
    """The reports a real download sends: resolve, progress, publish."""
    reporter.send(DownloadReport(jobName=job_name, state="Resolving", requestedRevision="main"), force=True)
    reporter.send(DownloadReport(jobName=job_name, state="Downloading", resolvedRevision=revision,
                                 bytesDone=size // 2, bytesTotal=size, filesDone=files // 2, filesTotal=files,
                                 bytesPerSecond=500 * 1024**2), force=True)
    reporter.send(DownloadReport(jobName=job_name, state="Published", resolvedRevision=revision, bytesDone=size,
                                 bytesTotal=size, filesDone=files, filesTotal=files, format="safetensors",
                                 architecture="Qwen3ForCausalLM", dtype="bfloat16"), force=True)


def download_job(k8s: Cluster, download: dict[str, Any], timeout: float = 60.0,
                 diagnostics: Callable[[], str] | None = None) -> Any:
    """The Job of a ModelDownload, once the operator created it (its ServiceAccount and Role come first)."""
    name = download["metadata"]["name"]
    return wait_for(lambda: next(iter(k8s.download_jobs(name)), None), timeout, describe=f"the Job of {name}",
                    diagnostics=diagnostics)


def publish_cache(k8s: Cluster, cluster: LocalCluster, namespace: str, name: str, revision: str = REVISION_A,
                  size: int = 3 * 1024**3, diagnostics: Callable[[], str] | None = None) -> dict[str, Any]:
    """Plays the download Job of the ModelDownload that cache `namespace/name` wants to Published, as that
    download's ServiceAccount, and returns the cache once Ready."""
    _, download = k8s.wait_download(namespace, name, diagnostics=diagnostics)
    job = download_job(k8s, download, diagnostics=diagnostics)
    publish(downloader_reporter(k8s, cluster, download["metadata"]["namespace"], download["metadata"]["name"]),
            job.metadata.name, revision=revision, size=size)
    return k8s.wait_phase(namespace, name, "Ready", diagnostics=diagnostics)
