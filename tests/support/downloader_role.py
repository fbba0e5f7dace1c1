"""Plays the download Job's part against the real apiserver with the downloader's own reporting code,
authenticated as the per-download downloader ServiceAccount (so its least-privilege Role is exercised too)."""

from __future__ import annotations

from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.api.v1alpha2 import DownloadReport
from modelcache_operator.builders import naming
from modelcache_operator.downloader.report import KubernetesStatusReporter
from tests.support.kube import Cluster
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
