"""Generates the CustomResourceDefinitions (ModelStore, ModelCache, ModelDownload) from the pydantic models.

Pydantic emits JSON Schema with `$ref`s and `anyOf: [X, null]` for optionals; Kubernetes wants a
structural OpenAPI v3 schema, so refs are inlined and optionals become "not required".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from . import v1alpha2 as api
from .names import GROUP, VERSION

_DROPPED_KEYS = {"title", "default"}

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
        elif key == "additionalProperties" and isinstance(value, bool):
            continue  # structural schemas prune unknown fields by default; `true` becomes preserve-unknown
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


def _ready(name: str = "Ready") -> dict[str, Any]:
    return {"name": name, "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'}


AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    scope: str
    spec: type[api.ApiModel]
    status: type[api.ApiModel]
    description: str
    columns: list[dict[str, Any]]
    object_fields: tuple[str, ...]  # sub-objects with default_factory, defaulted to {} so their defaults apply

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def filename(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


STORE = Kind(
    api.STORE_KIND, api.STORE_PLURAL, "modelstore", ["mst"], "Cluster", api.ModelStoreSpec, api.ModelStoreStatus,
    "ModelStore is a cluster admin's storage for model caches: one backend, the namespaces that may use it, "
    "quota and retention.",
    [{"name": "Backend", "type": "string", "jsonPath": ".status.backend"},
     {"name": "Default", "type": "boolean", "jsonPath": ".spec.default"},
     {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
     {"name": "Used", "type": "string", "jsonPath": ".status.used"},
     {"name": "Quota", "type": "string", "jsonPath": ".spec.quota"},
     {"name": "Revisions", "type": "integer", "jsonPath": ".status.revisionCount"}, AGE],
    ("retention",))
CACHE = Kind(
    api.KIND, api.PLURAL, api.SINGULAR, api.SHORT_NAMES, "Namespaced", api.ModelCacheSpec, api.ModelCacheStatus,
    "ModelCache asks for a model on a ModelStore, downloaded once per revision for every namespace that asks, "
    "and injects it, read-only and prewarmed, into the serving pods that opt in.",
    [{"name": "Model", "type": "string", "jsonPath": ".status.model"},
     {"name": "Store", "type": "string", "jsonPath": ".status.store"},
     {"name": "Revision", "type": "string", "jsonPath": ".status.resolvedRevision"},
     {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
     {"name": "Progress", "type": "string", "jsonPath": ".status.progress.percent"},
     {"name": "Size", "type": "string", "jsonPath": ".status.size"},
     {"name": "Shared", "type": "boolean", "jsonPath": ".status.downloadRef.shared", "priority": 1}, AGE],
    ("download", "prewarm", "serving"))
DOWNLOAD = Kind(
    api.DOWNLOAD_KIND, api.DOWNLOAD_PLURAL, "modeldownload", ["mdl"], "Namespaced", api.ModelDownloadSpec,
    api.ModelDownloadStatus,
    "ModelDownload is the operator's record of one download into one folder of a ModelStore. Written by the "
    "operator and its downloader only.",
    [{"name": "Store", "type": "string", "jsonPath": ".spec.store"},
     {"name": "Folder", "type": "string", "jsonPath": ".spec.folder"},
     {"name": "Revision", "type": "string", "jsonPath": ".status.resolvedRevision"},
     {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
     {"name": "Requested-By", "type": "string", "jsonPath": ".spec.requestedBy"}, AGE],
    ("download",))
KINDS = (STORE, CACHE, DOWNLOAD)


def custom_resource_definition(kind: Kind) -> dict[str, Any]:
    spec_schema = openapi_schema(kind.spec)
    for name in kind.object_fields:
        spec_schema["properties"][name]["default"] = {}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind,
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": kind.short_names,
                "listKind": f"{kind.kind}List",
                "categories": ["modelcache"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": kind.columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": kind.description,
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": openapi_schema(kind.status),
                    },
                }},
            }],
        },
    }


HEADER = "# Generated by `modelcache-operator crd` from src/modelcache_operator/api. Do not edit.\n"


def render_yaml(kind: Kind) -> str:
    return HEADER + yaml.safe_dump(custom_resource_definition(kind), sort_keys=False, width=120)


CHART_HEADER = ("{{- /* Generated by `modelcache-operator crd --chart-template` from src/modelcache_operator/api."
                " Do not edit. */}}\n")


def render_chart_template() -> str:
    """The Helm chart's CRD template: the same CRDs behind `crds.enabled`, kept on `helm uninstall`.

    The CRDs live in templates/ rather than crds/ so `helm upgrade` updates them; `keep` stops an
    uninstall from deleting them (and with them every ModelCache in the cluster).
    """
    bodies = []
    for kind in KINDS:
        crd = custom_resource_definition(kind)
        crd["metadata"]["annotations"] = {"helm.sh/resource-policy": "keep"}
        bodies.append(yaml.safe_dump(crd, sort_keys=False, width=120))
    body = "---\n".join(bodies)
    if "{{" in body:
        raise ValueError("a CRD contains '{{', which Helm would read as a template action")
    return CHART_HEADER + "{{- if .Values.crds.enabled }}\n" + body + "{{- end }}\n"
