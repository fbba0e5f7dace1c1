"""Who wants a download, from the indices alone: the caches whose status names it, and the cache that
requested it while that cache is unchanged, so a download is never unused before its requester's status
catches up (kopf's indices see the download and that status in either order)."""

from __future__ import annotations

from typing import Any

from modelcache_operator.api.names import ANN_REQUESTED_AT, ANNOTATION_RETRY
from modelcache_operator.builders import naming
from modelcache_operator.operator.observe import download_view

NS = "modelcache-system"
DOWNLOAD = "s-qwen-1"


def cache(generation: int = 1, retry: str | None = None, status: dict[str, Any] | None = None,
          deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "c", "namespace": "team", "generation": generation,
                            "annotations": {ANNOTATION_RETRY: retry} if retry else {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    return {"kind": "ModelCache", "metadata": meta, "status": status or {}}


def download(stamp: str | None) -> dict[str, Any]:
    return {"kind": "ModelDownload",
            "metadata": {"name": DOWNLOAD, "namespace": NS, "uid": "uid-d",
                         "annotations": {ANN_REQUESTED_AT: stamp} if stamp else {}},
            "spec": {"store": "s", "claimName": "writer", "folder": "hf/acme/m/all", "requestedBy": "team/c"},
            "status": {}}


def wanted_by(body: dict[str, Any], requester: dict[str, Any] | None,
              pointing: tuple[tuple[str, str], ...] = ()) -> tuple[str, ...]:
    indices = {
        "store_index": {}, "termination_index": {}, "config_error_index": {}, "cleanup_index": {},
        "pods_by_download": {}, "job_index": {}, "download_index": {(NS, DOWNLOAD): [body]},
        "caches_by_download": {(NS, DOWNLOAD): list(pointing)} if pointing else {},
        "cache_index": {("team", "c"): [requester]} if requester else {},
    }
    return download_view(body, indices, NS).wanted_by


def test_the_requester_wants_it_before_its_status_names_it() -> None:
    requester = cache()  # the watch has not delivered the status that names the download yet
    assert wanted_by(download(naming.request_stamp(requester)), requester) == ("team/c",)
    retried = cache(retry="2")
    assert naming.request_stamp(retried) != naming.request_stamp(requester)
    assert wanted_by(download(naming.request_stamp(retried)), retried) == ("team/c",)


def test_a_changed_gone_or_deleting_requester_does_not() -> None:
    stamp = naming.request_stamp(cache())
    assert wanted_by(download(stamp), cache(generation=2)) == ()  # a new revision: a new download
    assert wanted_by(download(stamp), cache(retry="again")) == ()
    assert wanted_by(download(stamp), None) == ()
    assert wanted_by(download(stamp), cache(deleting=True)) == ()
    assert wanted_by(download(None), cache()) == ()  # created before the stamp existed: status alone decides


def test_caches_whose_status_names_it_want_it_whatever_their_spec() -> None:
    other = (("team-b", "shared"),)
    assert wanted_by(download(naming.request_stamp(cache())), cache(generation=3), other) == ("team-b/shared",)
    both = wanted_by(download(naming.request_stamp(cache())), cache(), other)
    assert both == ("team-b/shared", "team/c")
