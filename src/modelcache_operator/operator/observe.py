"""The view one reconcile needs, cut from kopf's indices. Runs in the event loop, where kopf changes the
indices, so reconciles (in threads) never read the API or iterate an index that is changing."""

from __future__ import annotations

import json
from typing import Any

from ..api.names import ANN_REQUESTED_AT
from ..builders import naming
from ..builders.quantity import parse_quantity
from .downloads import with_termination_message
from .views import CacheView, DownloadView, Eviction, StoreEntry, StoreView


def first(index: Any, key: Any) -> Any:
    store = index.get(key)
    return next(iter(store)) if store else None


def _stores(indices: dict[str, Any]) -> dict[str, StoreEntry]:
    return {name: next(iter(entries)) for name, entries in indices["store_index"].items() if entries}


def cache_view(body: dict[str, Any], indices: dict[str, Any], operator_namespace: str) -> CacheView:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    stores = _stores(indices)
    # The download this cache wants lives in its namespace or the operator's; which one, its reconcile decides.
    bodies = {(str(key[0]), key[1]): next(iter(entries)) for key, entries in indices["download_index"].items()
              if entries and key[0] in (namespace, operator_namespace)}
    downloads = {key: dict(body.get("status") or {}) for key, body in bodies.items()}
    requesters = {key: str(requested) for key, body in bodies.items()
                  if (requested := (body.get("spec") or {}).get("requestedBy"))}
    claims = [naming.pvc_name(name), *(naming.store_claim_name(store) for store in stores)]
    phases = {claim: phase for claim in claims
              if (phase := first(indices["pvc_index"], (namespace, claim))) is not None}
    return CacheView(stores=stores, namespace_labels=first(indices["namespace_index"], namespace),
                     pvc_phases=phases, downloads=downloads, download_requesters=requesters)


def _downloads(indices: dict[str, Any]) -> list[dict[str, Any]]:
    return [next(iter(entries)) for entries in indices["download_index"].values() if entries]


def _published_at(download: dict[str, Any]) -> str | None:
    conditions = (download.get("status") or {}).get("conditions") or []
    done = next((c for c in conditions if c.get("type") == "Downloaded" and c.get("status") == "True"), None)
    return str(done["lastTransitionTime"]) if done else None


def _model_of(download: dict[str, Any]) -> tuple[Any, ...]:
    spec = download.get("spec") or {}
    return download["metadata"]["namespace"], spec.get("store"), json.dumps(
        {hub: (source or {}).get("repo") or (source or {}).get("model")
         for hub, source in (spec.get("source") or {}).items()}, sort_keys=True)


def _planned_bytes(download: dict[str, Any]) -> int:
    """What a download in flight will add to its store, once its downloader has listed the files."""
    status = download.get("status") or {}
    if status.get("phase") in ("Ready", "Failed"):
        return 0
    return int((status.get("download") or {}).get("bytesTotal") or 0)


def _quota_free(store: StoreEntry | None, me: dict[str, Any], downloads: list[dict[str, Any]]) -> int | None:
    """The quota less what cannot be evicted (revisions in use; all of them on a Retain store) and the other
    downloads in flight."""
    if store is None or store.spec is None or store.spec.quota is None:
        return None
    name = store.body["metadata"]["name"]
    retain = store.spec.retention.policy == "Retain"
    taken = 0
    for other in downloads:
        status = other.get("status") or {}
        if (other.get("spec") or {}).get("store") != name or other["metadata"]["uid"] == me["metadata"]["uid"]:
            continue
        if status.get("phase") == "Ready" and (retain or not status.get("unusedSince")):
            taken += int(status.get("sizeBytes") or 0)
        taken += _planned_bytes(other)
    return (parse_quantity(store.spec.quota) or 0) - taken


def download_view(body: dict[str, Any], indices: dict[str, Any], operator_namespace: str) -> DownloadView:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    store = _stores(indices).get(str((body.get("spec") or {}).get("store")))
    owner = (namespace, naming.label_value(name))
    messages = {job: message for job, message in indices["termination_index"].get(owner, ())}
    job = first(indices["job_index"], owner)
    if job is not None and job.name in messages:
        job = with_termination_message(job, messages[job.name])
    config_errors = {job: message for job, message in indices["config_error_index"].get(owner, ())}
    config_error = config_errors.get(job.name) if job is not None and job.active else None
    downloads = _downloads(indices)
    mine, published = _model_of(body), _published_at(body)
    newer = sum(1 for d in downloads if d is not body and _model_of(d) == mine and (_published_at(d) or "") >
                (published or "~")) if published else 0
    folder = ((body.get("spec") or {}).get("folder"), (body.get("status") or {}).get("resolvedRevision"))
    twin = folder[1] is not None and any(
        d["metadata"]["uid"] != body["metadata"]["uid"] and not d["metadata"].get("deletionTimestamp")
        and d["metadata"]["namespace"] == namespace and (d.get("spec") or {}).get("store") == store_name(body)
        and ((d.get("spec") or {}).get("folder"), (d.get("status") or {}).get("resolvedRevision")) == folder
        for d in downloads)
    return DownloadView(
        store=store, job=job, cleanup_job=first(indices["cleanup_index"], owner), config_error=config_error,
        check_jobs=tuple(indices.get("check_index", {}).get(owner, ())),
        wanted_by=_wanted_by(body, indices),
        used_by=tuple(sorted(indices["pods_by_download"].get((namespace, name), ()))),
        newer_published=newer, twin_alive=twin, quota_free_bytes=_quota_free(store, body, downloads),
        folder_writer=_folder_writer(body, indices, downloads) if job is None else None)


def _wanted_by(body: dict[str, Any], indices: dict[str, Any]) -> tuple[str, ...]:
    """Caches whose status names this download, and the cache that requested it while that cache's spec is
    the one it was requested for. The download exists before the status naming it, and kopf's indices may see
    the two in either order: without the second rule a store with a TTL of 0 removes a download at birth."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    wanting = {f"{ns}/{n}" for ns, n in indices["caches_by_download"].get((namespace, name), ())}
    requester = str((body.get("spec") or {}).get("requestedBy") or "")
    stamp = (body["metadata"].get("annotations") or {}).get(ANN_REQUESTED_AT)
    cache_namespace, _, cache_name = requester.partition("/")
    cache = first(indices["cache_index"], (cache_namespace, cache_name)) if stamp and cache_name else None
    if cache is not None and not cache["metadata"].get("deletionTimestamp") and naming.request_stamp(cache) == stamp:
        wanting.add(requester)
    return tuple(sorted(wanting))


def _folder_writer(body: dict[str, Any], indices: dict[str, Any], downloads: list[dict[str, Any]]) -> str | None:
    """Another download of the same folder (on the same claim) whose Job is running: two keys that resolve
    into one folder (`main` and a tag, say) take turns instead of meeting at the volume lock."""
    namespace, spec = body["metadata"]["namespace"], body.get("spec") or {}
    for other in downloads:
        theirs = other.get("spec") or {}
        if (other["metadata"]["uid"] == body["metadata"]["uid"] or other["metadata"]["namespace"] != namespace
                or (theirs.get("claimName"), theirs.get("folder")) != (spec.get("claimName"), spec.get("folder"))):
            continue
        if (other.get("status") or {}).get("phase") in ("Ready", "Failed"):
            continue  # published or failed: its pod writes nothing more, even while it exits
        job = first(indices["job_index"], (namespace, naming.label_value(other["metadata"]["name"])))
        if job is not None and job.active:
            return str(other["metadata"]["name"])
    return None


def store_name(download: dict[str, Any]) -> str:
    return str((download.get("spec") or {}).get("store"))


def store_view(body: dict[str, Any], indices: dict[str, Any], operator_namespace: str) -> StoreView:
    name = body["metadata"]["name"]
    mine = [d for d in _downloads(indices) if store_name(d) == name]
    published = [d for d in mine if (d.get("status") or {}).get("phase") == "Ready"]
    evictable = sorted(
        (Eviction(d["metadata"]["namespace"], d["metadata"]["name"], int(d["status"].get("sizeBytes") or 0),
                  str(d["status"]["unusedSince"]))
         for d in published if d["status"].get("unusedSince") and not d["metadata"].get("deletionTimestamp")),
        key=lambda e: (e.unused_since, e.namespace, e.name))
    return StoreView(
        others={n: e for n, e in _stores(indices).items() if n != name},
        writer_claim_phase=first(indices["pvc_index"], (operator_namespace, naming.store_claim_name(name))),
        published_bytes=sum(int((d.get("status") or {}).get("sizeBytes") or 0) for d in published
                            if not d["metadata"].get("deletionTimestamp")),
        published_count=len(published), in_flight_bytes=sum(_planned_bytes(d) for d in mine),
        evictable=tuple(evictable))
