"""One Job per folder at a time inside a cluster: two downloads whose keys share a folder (the same model and
file filter at two revisions) take turns, against the real control plane. The first one's Job never gets a
node here (kwok), so it stays active until its download is published."""

from __future__ import annotations

import time

from modelcache_devcluster.cluster import LocalCluster
from tests.integration.test_modelcache import (
    NEVER_SCHEDULED,
    Stores,
    cache_manifest,
    cache_with_download,
    download_and_job,
    reporter_for,
    stores,  # noqa: F401  (the fixture)
)
from tests.support.downloader_role import REVISION_B, publish
from tests.support.kube import Cluster, wait_for
from tests.support.operator import OperatorProcess


def test_a_second_download_of_one_folder_waits_for_the_running_job(
        k8s: Cluster, namespace: str, operator: OperatorProcess, local_cluster: LocalCluster,
        stores: Stores) -> None:  # noqa: F811
    store = stores.nfs(namespace)
    k8s.create_cache(namespace, cache_manifest("first", store, download=NEVER_SCHEDULED))
    first, first_job = download_and_job(k8s, namespace, "first", operator)
    second_cache = cache_manifest("second", store, download=NEVER_SCHEDULED)
    second_cache["spec"]["source"]["huggingface"]["revision"] = "v2.0"
    k8s.create_cache(namespace, second_cache)
    second = k8s.download_of(cache_with_download(k8s, namespace, "second", operator))
    assert second is not None and second["spec"]["folder"] == first["spec"]["folder"]
    name = second["metadata"]["name"]

    def waiting() -> bool:
        download = k8s.get_download(second["metadata"]["namespace"], name) or {}
        return any(c["type"] == "Ready" and c["reason"] == "WaitingForFolder"
                   for c in (download.get("status") or {}).get("conditions") or [])
    wait_for(waiting, 30, describe="the second download waiting for the folder", diagnostics=operator.log_tail)
    cache = wait_for(lambda: (c := k8s.get_cache(namespace, "second")) and k8s.condition(
        c, "Ready")["reason"] == "WaitingForFolder" and c, 30, describe="the cache says why it waits",
        diagnostics=operator.log_tail)
    assert first["metadata"]["name"] in k8s.condition(cache, "Ready")["message"]
    time.sleep(5)  # a few resyncs (2 s): still no second Job while the first one writes
    assert k8s.download_jobs(name) == []

    publish(reporter_for(k8s, local_cluster, first), first_job.metadata.name)
    k8s.wait_phase(namespace, "first", "Ready", diagnostics=operator.log_tail)
    _, second_job = download_and_job(k8s, namespace, "second", operator)
    publish(reporter_for(k8s, local_cluster, second), second_job.metadata.name, revision=REVISION_B)
    ready = k8s.wait_phase(namespace, "second", "Ready", diagnostics=operator.log_tail)
    assert ready["status"]["resolvedRevision"] == REVISION_B
