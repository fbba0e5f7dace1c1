"""A branch is resolved once per download, on the real node: after the loopback hub moves `main` past a Ready
cache, the cache stays on its commit and gets `SourceUpdated` from the periodic check Job (the real
downloader in its container, checking every few seconds here); deleting the finished download Job downloads
nothing and moves nothing; the documented user action (a new `modelcache.dev/retry` value) moves it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from modelcache_operator.api.names import ANNOTATION_RETRY, LABEL_DOWNLOAD, LABEL_ROLE
from modelcache_operator.builders.upstream import CHECK_ROLE
from tests.hubs import package_model_files
from tests.integration.test_stores_real_node import MINILM, Env, revisions_in, running_env
from tests.support.kube import wait_for
from tests.support.real_node_flow import RealNodeCluster

pytestmark = pytest.mark.integration
CHECK_SECONDS = 6
NEW_FILE = "NEW_FILE.md"


@pytest.fixture(scope="module")
def env(real_cluster: RealNodeCluster) -> Iterator[Env]:
    check_env = {"MODELCACHE_UPSTREAM_CHECK_SECONDS": str(CHECK_SECONDS)}
    with running_env(real_cluster, "upstream", check_env) as environment:
        yield environment


def source_updated(env: Env, namespace: str, name: str) -> dict[str, Any] | None:
    cache = env.k8s.get_cache(namespace, name) or {}
    return next((c for c in (cache.get("status") or {}).get("conditions") or [] if c["type"] == "SourceUpdated"),
                None)


def check_jobs(env: Env, download: str) -> list[Any]:
    return list(env.k8s.batch.list_job_for_all_namespaces(
        label_selector=f"{LABEL_ROLE}={CHECK_ROLE},{LABEL_DOWNLOAD}={download}").items)


def test_a_moved_branch_is_a_condition_never_a_silent_move(env: Env) -> None:
    store = env.store("upstream")
    namespace = env.namespace("upstream")
    env.cache(namespace, "minilm", MINILM, store)
    cache = env.ready(namespace, "minilm")
    pinned = cache["status"]["resolvedRevision"]
    ref = cache["status"]["downloadRef"]
    folder = env.root(store) / "hf" / MINILM / "all"
    assert revisions_in(folder) == [pinned]

    # The first periodic check sees the same commit.
    up_to_date = wait_for(lambda: (c := source_updated(env, namespace, "minilm")) and c["status"] == "False" and c,
                          120, describe="SourceUpdated=False after the first check", diagnostics=env.diagnostics)
    assert up_to_date["reason"] == "UpToDate" and pinned in up_to_date["message"]
    assert check_jobs(env, ref["name"]), "the check ran as a Job"

    moved = env.hub.move_branch(MINILM, {**dict(package_model_files()), NEW_FILE: b"only in the new commit\n"})
    served = dict(env.hub.bytes_served)
    condition = wait_for(lambda: (c := source_updated(env, namespace, "minilm")) and c["status"] == "True" and c,
                         120, describe="SourceUpdated=True once the branch moved", diagnostics=env.diagnostics)
    assert condition["reason"] == "UpstreamMoved"
    assert pinned in condition["message"] and moved in condition["message"]
    assert ANNOTATION_RETRY in condition["message"]
    after = env.k8s.get_cache(namespace, "minilm") or {}
    assert after["status"]["phase"] == "Ready" and after["status"]["resolvedRevision"] == pinned
    download = env.k8s.get_download(ref["namespace"], ref["name"]) or {}
    assert download["status"]["resolvedRevision"] == pinned
    assert download["status"]["upstream"]["revision"] == moved
    assert revisions_in(folder) == [pinned] and dict(env.hub.bytes_served) == served  # checks fetch no file

    # Deleting the finished download Job neither re-downloads nor moves the cache.
    [job] = env.k8s.download_jobs(ref["name"])
    batch = kubernetes.client.BatchV1Api(env.k8s.core.api_client)
    batch.delete_namespaced_job(job.metadata.name, job.metadata.namespace, propagation_policy="Background")
    wait_for(lambda: not env.k8s.download_jobs(ref["name"]), 60, describe="the finished Job gone")
    time.sleep(3 * CHECK_SECONDS)  # several resyncs and check rounds
    assert env.k8s.download_jobs(ref["name"]) == []
    assert dict(env.hub.bytes_served) == served and revisions_in(folder) == [pinned]
    still = env.k8s.get_cache(namespace, "minilm") or {}
    assert still["status"]["phase"] == "Ready" and still["status"]["resolvedRevision"] == pinned
    assert (source_updated(env, namespace, "minilm") or {}).get("status") == "True"

    # The documented action: a new value of the retry annotation downloads what the branch points at now.
    env.k8s.custom.patch_namespaced_custom_object(
        "modelcache.dev", "v1alpha2", namespace, "modelcaches", "minilm",
        {"metadata": {"annotations": {ANNOTATION_RETRY: "follow-upstream"}}})
    wait_for(lambda: ((env.k8s.get_cache(namespace, "minilm") or {}).get("status") or {}).get(
        "resolvedRevision") == moved, 240, describe="the cache moved to the new commit", diagnostics=env.diagnostics)
    assert (folder / moved / NEW_FILE).read_bytes() == b"only in the new commit\n"
    assert (folder / pinned).is_dir()  # running pods may still be pinned to the old folder
    final = env.ready(namespace, "minilm")
    assert final["status"]["downloadRef"]["name"] != ref["name"]


def download_pods(env: Env, download: str) -> list[Any]:
    return list(env.k8s.core.list_pod_for_all_namespaces(
        label_selector=f"{LABEL_ROLE}=downloader,{LABEL_DOWNLOAD}={download}").items)


def test_a_killed_pods_replacement_starts_only_after_it_is_terminal_and_keeps_the_commit(env: Env) -> None:
    """One writer per folder without clocks: the Job (podReplacementPolicy Failed) creates the replacement
    only once the killed pod has terminated, which then takes the volume lock over at once (no stale wait)
    and fetches the commit the first pod resolved."""
    store = env.store("replace")
    namespace = env.namespace("replace")
    env.hub.faults.bytes_per_second = 256 * 1024  # per connection: the first pod is still downloading
    try:
        env.cache(namespace, "minilm", MINILM, store)
        ref = wait_for(lambda: ((env.k8s.get_cache(namespace, "minilm") or {}).get("status") or {}).get(
            "downloadRef"), 60, describe="the cache's download")
        report = wait_for(lambda: (d := (env.k8s.get_download(ref["namespace"], ref["name"]) or {}).get(
            "status", {}).get("download")) and d.get("bytesDone", 0) > 0 and d, 180,
            describe="the first pod downloading", diagnostics=env.diagnostics)
        resolved = report["resolvedRevision"]
        [first] = download_pods(env, ref["name"])
        env.k8s.core.delete_namespaced_pod(first.metadata.name, first.metadata.namespace)
        finished_at = None
        while True:  # follow the killed pod until it is gone: its terminated time, and no replacement before it
            pods = {p.metadata.name: p for p in download_pods(env, ref["name"])}
            old = pods.pop(first.metadata.name, None)
            if old is None:
                break
            state = (old.status.container_statuses or [None])[-1]
            if state is not None and state.state.terminated is not None:
                finished_at = state.state.terminated.finished_at
            assert not pods or finished_at is not None, f"{list(pods)} created while {first.metadata.name} ran"
            time.sleep(0.2)
        assert finished_at is not None, "the killed pod was never seen terminated"
        replacement = wait_for(lambda: download_pods(env, ref["name"]), 120, describe="the replacement pod",
                               diagnostics=env.diagnostics)[0]
        assert replacement.metadata.creation_timestamp >= finished_at
    finally:
        env.hub.faults.bytes_per_second = None
    cache = env.ready(namespace, "minilm")
    assert cache["status"]["resolvedRevision"] == resolved
    log = env.k8s.core.read_namespaced_pod_log(replacement.metadata.name, replacement.metadata.namespace)
    assert f"Taking over /cache/.modelcache-lock.json from {first.metadata.name}" in log, log
    assert "Waiting for the volume lock" not in log, log
    assert f"resolved to {resolved} by an earlier run" in log, log
