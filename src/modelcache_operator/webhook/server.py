"""kopf admission handlers: a thin shell around the pure `mutate_pod` and `validate_modelcache`.

Failure policy: the chart registers the pod webhook with `failurePolicy: Fail`, scoped by the
`modelcache.dev/inject=true` objectSelector. While the operator is down, opted-in pods wait (their
controllers retry) instead of starting without their model; every other pod is never sent here.
"""

from __future__ import annotations

import time
from typing import Any

import jsonpatch
import kopf
from pydantic import ValidationError

from ..api import v1alpha1 as api
from ..operator import metrics
from ..operator.handlers import CONFIG
from .patch import ANN_CACHES, LABEL_INJECT, AdmissionDecision, CacheView, InjectionSettings, mutate_pod
from .validate import validate_modelcache

POD_WEBHOOK_ID = "inject-pods"
MODELCACHE_WEBHOOK_ID = "validate-modelcaches"
SETTINGS = InjectionSettings(operator_image=CONFIG.image)


@kopf.on.startup()
def configure_admission(settings: kopf.OperatorSettings, **_: Any) -> None:
    if CONFIG.webhook_cert and CONFIG.webhook_key:
        settings.admission.server = kopf.WebhookServer(
            addr=CONFIG.webhook_host, port=CONFIG.webhook_port, host=CONFIG.webhook_host,
            certfile=CONFIG.webhook_cert, pkeyfile=CONFIG.webhook_key)
    settings.admission.managed = CONFIG.webhook_managed_name


def _cache_view(name: str, namespace: str, cache_index: kopf.Index[Any, Any]) -> CacheView | None:
    store = cache_index.get((namespace, name))
    if not store:
        return None
    body = next(iter(store))
    try:
        spec = api.ModelCacheSpec.model_validate(body.get("spec") or {})
        status = api.ModelCacheStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return None  # an invalid cache can't be injected; mutate_pod treats it as missing
    return CacheView(name=name, spec=spec, status=status)


def _apply_decision(decision: AdmissionDecision, patch: kopf.Patch, warnings: list[str]) -> None:
    warnings.extend(decision.warnings)
    if not decision.allowed:
        raise kopf.AdmissionError(decision.message or "denied by modelcache-operator", code=403)
    if decision.patch:
        ops = decision.patch
        patch.fns.append(lambda body: jsonpatch.apply_patch(body, ops, in_place=True))


# Both admission handlers are async on purpose: kopf runs sync handlers in its thread pool, where every
# worker may be inside a reconcile whose own write (the finalizer patch) waits for this very webhook, a
# deadlock until the apiserver's 30 s webhook timeout. They are pure and fast, so the event loop runs them.
@kopf.on.mutate("", "v1", "pods", id=POD_WEBHOOK_ID, operations=["CREATE"], labels={LABEL_INJECT: "true"})
async def inject_pod(body: kopf.Body, patch: kopf.Patch, warnings: list[str], **kwargs: Any) -> None:
    cache_index: kopf.Index[Any, Any] = kwargs["cache_index"]
    started = time.perf_counter()
    pod = dict(body)
    # The apiserver fills metadata.namespace from the request before admission, even for generateName pods.
    namespace = pod["metadata"]["namespace"]
    names = [n.strip() for n in (pod["metadata"].get("annotations") or {}).get(ANN_CACHES, "").split(",")]
    caches = {name: _cache_view(name, namespace, cache_index) for name in names if name}
    decision = mutate_pod(pod, caches, SETTINGS, namespace=namespace)
    metrics.WEBHOOK_SECONDS.labels(result="allowed" if decision.allowed else "denied").observe(
        time.perf_counter() - started)
    _apply_decision(decision, patch, warnings)


@kopf.on.validate(api.GROUP, api.VERSION, api.PLURAL, id=MODELCACHE_WEBHOOK_ID, operations=["CREATE", "UPDATE"])
async def validate_cache(body: kopf.Body, warnings: list[str], operation: str | None = None,
                         old: kopf.Body | None = None, **kwargs: Any) -> None:
    cache_index: kopf.Index[Any, Any] = kwargs["cache_index"]
    # Storage is immutable (a CRD rule), so an update that keeps it cannot create a clash. Refusing such
    # updates would lock two caches that slipped past this webhook out of finalizer and annotation changes,
    # deletion included.
    old_storage = (old.get("spec") or {}).get("storage") if old is not None else None
    if operation == "UPDATE" and old_storage == (body.get("spec") or {}).get("storage"):
        return
    meta = body.get("metadata", {})
    namespace, name = meta.get("namespace") or "default", meta.get("name")
    others = [
        (key[0], key[1], next(iter(store)).get("spec") or {})
        for key, store in cache_index.items()
        if key != (namespace, name) and store
    ]
    errors, found_warnings = validate_modelcache(dict(body.get("spec") or {}), namespace, others)
    warnings.extend(found_warnings)
    if errors:
        raise kopf.AdmissionError("; ".join(errors), code=422)
