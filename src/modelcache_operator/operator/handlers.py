"""kopf wiring: watches feed indices, and every trigger calls the one reconcile. Handlers stay thin."""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf

from ..api import v1alpha1 as api
from ..builders import naming
from ..builders.status import JobObservation
from ..webhook.patch import ANN_CACHES as CACHES_ANNOTATION
from ..webhook.patch import LABEL_INJECT as INJECT_LABEL
from .config import OperatorConfig
from .kube import Kube, load_api_client
from .reconciler import ClusterView, Reconciler, with_termination_message

CONFIG = OperatorConfig.from_env()
MANAGED = {naming.LABEL_MANAGED_BY: naming.MANAGED_BY}
_reconciler: Reconciler | None = None
# kopf types namespace as optional; every resource indexed here is namespaced.
IndexKey = tuple[str | None, str]


def _emit(body: dict[str, Any], event_type: str, reason: str, message: str) -> None:
    kopf.event(kopf.Body(cast(kopf.RawBody, body)), type=event_type, reason=reason, message=message)


def reconciler() -> Reconciler:
    global _reconciler  # noqa: PLW0603 - one reconciler per process, built after kopf logged in
    if _reconciler is None:
        _reconciler = Reconciler(Kube(load_api_client()), CONFIG, _emit)
    return _reconciler


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress and diff-base go to annotations: status belongs to the reconciler and the downloader.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modelcache.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="modelcache.dev")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 8


# ----- indices: what the watches know, so reconciles need no reads -----

def _job_observation(name: str, status: dict[str, Any]) -> JobObservation:
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed")
    return JobObservation(
        name=name,
        started=status.get("startTime"),
        finished=(failed or {}).get("lastTransitionTime") or status.get("completionTime"),
        active=bool(status.get("active")),
        succeeded="Complete" in conditions,
        failed=failed is not None,
        failure_reason=failed.get("reason") if failed else None,
        failure_message=failed.get("message") if failed else None,
    )


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
def job_index(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[IndexKey, JobObservation]:
    return {(namespace, name): _job_observation(name, dict(status))}


@kopf.index("", "v1", "persistentvolumeclaims", labels=MANAGED)
def pvc_index(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[IndexKey, str]:
    return {(namespace, name): str(status.get("phase", "Pending"))}


@kopf.index("", "v1", "pods", labels={INJECT_LABEL: "true"})
def pods_using_index(namespace: str | None, name: str, annotations: kopf.Annotations, status: kopf.Status,
                     **_: Any) -> dict[IndexKey, str]:
    if status.get("phase") in ("Succeeded", "Failed"):
        return {}
    caches = [c.strip() for c in annotations.get(CACHES_ANNOTATION, "").split(",") if c.strip()]
    return {(namespace, cache): name for cache in caches}


@kopf.index("", "v1", "pods", labels={**MANAGED, naming.LABEL_ROLE: "downloader"})
def termination_index(namespace: str | None, labels: kopf.Labels, status: kopf.Status,
                      **_: Any) -> dict[IndexKey, str]:
    """The downloader writes its failure reason as JSON to the termination log; keep the latest per Job."""
    for container in status.get("containerStatuses") or []:
        message = ((container.get("state") or {}).get("terminated") or {}).get("message")
        if message and "job-name" in labels:
            return {(namespace, labels["job-name"]): message}
    return {}


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def cache_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[IndexKey, dict[str, Any]]:
    return {(namespace, name): dict(body)}


def _view(indices: dict[str, Any]) -> ClusterView:
    messages = indices["termination_index"]
    return ClusterView(
        jobs={key: with_termination_message(next(iter(store)), messages.get(key))
              for key, store in indices["job_index"].items()},
        pvc_phases={key: next(iter(store)) for key, store in indices["pvc_index"].items()},
        pods_using={key: sorted(store) for key, store in indices["pods_using_index"].items()},
    )


# ----- triggers: every one of them runs the same level-based reconcile -----

@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
def on_cache_event(type: str, body: kopf.Body, **kwargs: Any) -> None:
    if type == "DELETED":
        reconciler().forget(body["metadata"]["namespace"], body["metadata"]["name"])
        return
    reconciler().reconcile(dict(body), _view(kwargs))


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=CONFIG.resync_seconds, initial_delay=1.0)
def resync(body: kopf.Body, **kwargs: Any) -> None:
    reconciler().reconcile(dict(body), _view(kwargs))


def _reconcile_cache(namespace: str, cache: str, indices: dict[str, Any]) -> None:
    """A child changed: reconcile its cache now instead of at the next resync."""
    store = indices["cache_index"].get((namespace, cache))
    if store:
        reconciler().reconcile(next(iter(store)), _view(indices))


def _owner_cache(owner_references: list[dict[str, Any]]) -> str | None:
    return next((o["name"] for o in owner_references if o.get("kind") == api.KIND), None)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("", "v1", "persistentvolumeclaims", labels=MANAGED)
def on_child_event(namespace: str | None, meta: kopf.Meta, **kwargs: Any) -> None:
    cache = _owner_cache(list(meta.get("ownerReferences") or []))
    if cache and namespace:
        _reconcile_cache(namespace, cache, kwargs)


@kopf.on.event("", "v1", "pods", labels={INJECT_LABEL: "true"})
def on_serving_pod_event(type: str, namespace: str | None, annotations: kopf.Annotations,
                         **kwargs: Any) -> None:
    # Only a pod going away can unblock a deletion that waits for users.
    if type != "DELETED" or namespace is None:
        return
    for cache in annotations.get(CACHES_ANNOTATION, "").split(","):
        store = kwargs["cache_index"].get((namespace, cache.strip()))
        if store and next(iter(store))["metadata"].get("deletionTimestamp"):
            _reconcile_cache(namespace, cache.strip(), kwargs)
