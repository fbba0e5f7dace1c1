"""AdmissionReview in, AdmissionReview out: pure functions around `mutate_pod` and `validate_modelcache`.

No I/O: the server passes in a lookup over its watch-fed ModelCache view.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .patch import ANN_CACHES, AdmissionDecision, CacheView, InjectionSettings, mutate_pod
from .validate import validate_modelcache

CacheLookup = Callable[[str, str], CacheView | None]  # (namespace, name) -> view


def response(request: Mapping[str, Any], allowed: bool, *, patch: list[dict[str, Any]] | None = None,
              warnings: list[str] | None = None, message: str | None = None, code: int = 403) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
    if warnings:
        response["warnings"] = warnings
    if not allowed:
        response["status"] = {"code": code, "message": message or "denied by modelcache-operator"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def pod_decision(request: Mapping[str, Any], lookup: CacheLookup, settings: InjectionSettings) -> AdmissionDecision:
    pod = request.get("object") or {}
    # The apiserver sets request.namespace even for generateName pods whose metadata has none yet.
    namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "default"
    names = [n.strip() for n in ((pod.get("metadata") or {}).get("annotations") or {}).get(ANN_CACHES, "").split(",")]
    caches = {name: lookup(namespace, name) for name in names if name}
    return mutate_pod(pod, caches, settings, namespace=namespace)


def review_modelcache(request: Mapping[str, Any],
                      others: Iterable[tuple[str, str, Mapping[str, Any]]]) -> dict[str, Any]:
    obj = request.get("object") or {}
    spec = obj.get("spec") or {}
    # Storage is immutable (a CRD rule), so an update that keeps it cannot create a clash. Refusing such
    # updates would lock two caches that slipped past this webhook out of finalizer and annotation changes,
    # deletion included.
    if request.get("operation") == "UPDATE" and ((request.get("oldObject") or {}).get("spec") or {}).get(
            "storage") == spec.get("storage"):
        return response(request, True)
    meta = obj.get("metadata") or {}
    namespace = request.get("namespace") or meta.get("namespace") or "default"
    errors, warnings = validate_modelcache(spec, namespace, others, name=meta.get("name"))
    if errors:
        return response(request, False, warnings=warnings, message="; ".join(errors), code=422)
    return response(request, True, warnings=warnings)
