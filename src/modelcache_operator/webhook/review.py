"""AdmissionReview in, AdmissionReview out: pure functions around `mutate_pod` and the validate.py checks.

No I/O: the server passes in lookups over its watch-fed views. DELETE is never reviewed (the webhook
configurations do not send it, and these functions allow it anyway).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from ..api import v1alpha2 as api
from ..api.names import ANN_CACHES
from .injection import InjectionSettings
from .patch import AdmissionDecision, mutate_pod
from .pinning import CacheView
from .pod_shape import split_names
from .validate import validate_modelcache, validate_modelstore

CacheLookup = Callable[[str, str], CacheView | None]  # (namespace, name) -> view
NamespaceLabelsLookup = Callable[[str], Mapping[str, str] | None]  # namespace -> labels, None when unknown
Stores = Mapping[str, api.ModelStoreSpec | None]  # every ModelStore, None when its spec does not parse


def response(request: Mapping[str, Any], allowed: bool, *, patch: list[dict[str, Any]] | None = None,
             warnings: list[str] | None = None, message: str | None = None, code: int = 403) -> dict[str, Any]:
    answer: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": allowed}
    if patch:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
    if warnings:
        answer["warnings"] = warnings
    if not allowed:
        answer["status"] = {"code": code, "message": message or "denied by modelcache-operator"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer}


def _validated(request: Mapping[str, Any], errors: list[str], warnings: list[str]) -> dict[str, Any]:
    if errors:
        return response(request, False, warnings=warnings, message="; ".join(errors), code=422)
    return response(request, True, warnings=warnings)


def pod_decision(request: Mapping[str, Any], lookup: CacheLookup, settings: InjectionSettings) -> AdmissionDecision:
    pod = request.get("object") or {}
    # The apiserver sets request.namespace even for generateName pods whose metadata has none yet.
    namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "default"
    names = split_names(((pod.get("metadata") or {}).get("annotations") or {}).get(ANN_CACHES, ""))
    # Names with a "/" are denied by mutate_pod; the lookup is in the pod's namespace only.
    caches = {name: lookup(namespace, name) for name in names if "/" not in name}
    return mutate_pod(pod, caches, settings, namespace=namespace)


def review_modelcache(request: Mapping[str, Any], stores: Stores, namespace_labels_lookup: NamespaceLabelsLookup,
                      allow_host_path: bool) -> dict[str, Any]:
    """422 when the cache may not use its store (or names removed fields). An UPDATE that keeps spec.store
    is always allowed: finalizer removal and deletion of a cache whose store disappeared must never be
    blocked."""
    if request.get("operation") not in ("CREATE", "UPDATE"):
        return response(request, True)
    obj = request.get("object") or {}
    spec = obj.get("spec") or {}
    old = request.get("oldObject")
    if request.get("operation") == "UPDATE" and old and (old.get("spec") or {}).get("store") == spec.get("store"):
        return response(request, True)
    namespace = request.get("namespace") or (obj.get("metadata") or {}).get("namespace") or "default"
    errors, warnings = validate_modelcache(spec, namespace, namespace_labels_lookup(namespace), stores,
                                           allow_host_path)
    return _validated(request, errors, warnings)


def review_modelstore(request: Mapping[str, Any], others: Stores, allow_host_path: bool) -> dict[str, Any]:
    """422 on errors. An UPDATE is refused only for errors the old object did not have already, so a store
    that got in before a rule (or before hostPath was disabled) can still be edited and finalized."""
    if request.get("operation") not in ("CREATE", "UPDATE"):
        return response(request, True)
    obj = request.get("object") or {}
    name = str((obj.get("metadata") or {}).get("name") or "")
    errors, warnings = validate_modelstore(name, obj.get("spec") or {}, others, allow_host_path)
    old = request.get("oldObject")
    if errors and request.get("operation") == "UPDATE" and old:
        old_errors, _ = validate_modelstore(name, old.get("spec") or {}, others, allow_host_path)
        errors = [e for e in errors if e not in old_errors]
    return _validated(request, errors, warnings)
