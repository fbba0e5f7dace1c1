"""Generates the ModelCache CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema with `$ref`s and `anyOf: [X, null]` for optionals; Kubernetes wants a
structural OpenAPI v3 schema, so refs are inlined and optionals become "not required".
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from . import v1alpha1 as api

_DROPPED_KEYS = {"title", "default"}

PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".status.model"},
    {"name": "Revision", "type": "string", "jsonPath": ".status.resolvedRevision", "priority": 0},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.percent"},
    {"name": "Size", "type": "string", "jsonPath": ".status.size"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"unsupported union in schema: {node['anyOf']}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return _structural({**variants[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields by default
        else:
            out[key] = _structural(value, defs)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _defaults(model_schema: dict[str, Any], pyd_schema: dict[str, Any], defs: dict[str, Any]) -> None:
    """Copy scalar defaults so the apiserver fills them (users see effective values with kubectl get)."""
    for name, prop in pyd_schema.get("properties", {}).items():
        target = model_schema["properties"][name]
        default = prop.get("default")
        if isinstance(default, str | int | bool) and not isinstance(default, dict):
            target["default"] = default
        ref = prop.get("$ref") or next((v.get("$ref") for v in prop.get("anyOf", []) if "$ref" in v), None)
        if ref:
            _defaults(target, defs[ref.rsplit("/", 1)[-1]], defs)
        elif prop.get("type") == "array" and "$ref" in prop.get("items", {}):
            _defaults(target["items"], defs[prop["items"]["$ref"].rsplit("/", 1)[-1]], defs)


def openapi_schema(model: type[api.ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs)
    _defaults(schema, raw, defs)
    return schema


def object_defaults(spec_schema: dict[str, Any]) -> None:
    # Sub-objects with default_factory get `{}` as default so their own field defaults apply.
    for name in ("download", "prewarm", "serving"):
        spec_schema["properties"][name]["default"] = {}


def custom_resource_definition() -> dict[str, Any]:
    spec_schema = openapi_schema(api.ModelCacheSpec)
    object_defaults(spec_schema)
    status_schema = openapi_schema(api.ModelCacheStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "listKind": f"{api.KIND}List",
                "categories": ["all", "modelcache"],
            },
            "versions": [{
                "name": api.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "ModelCache downloads a model once into shared storage and injects it, "
                                   "read-only and prewarmed, into the serving pods that opt in.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": status_schema,
                    },
                }},
            }],
        },
    }


HEADER = "# Generated by `modelcache-operator crd` from src/modelcache_operator/api. Do not edit.\n"


def render_yaml() -> str:
    return HEADER + yaml.safe_dump(custom_resource_definition(), sort_keys=False, width=120)


CHART_HEADER = ("{{- /* Generated by `modelcache-operator crd --chart-template` from src/modelcache_operator/api."
                " Do not edit. */}}\n")


def render_chart_template() -> str:
    """The Helm chart's CRD template: the same CRD behind `crds.enabled`, kept on `helm uninstall`.

    The CRD lives in templates/ rather than crds/ so `helm upgrade` updates it; `keep` stops an
    uninstall from deleting it (and with it every ModelCache in the cluster).
    """
    crd = custom_resource_definition()
    crd["metadata"]["annotations"] = {"helm.sh/resource-policy": "keep"}
    body = yaml.safe_dump(crd, sort_keys=False, width=120)
    if "{{" in body:
        raise ValueError("the CRD contains '{{', which Helm would read as a template action")
    return CHART_HEADER + "{{- if .Values.crds.enabled }}\n" + body + "{{- end }}\n"
