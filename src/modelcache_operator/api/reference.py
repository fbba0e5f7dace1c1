"""Generates the API field reference (docs/reference.md) for every kind, from the same schemas as the CRDs."""

from __future__ import annotations

import json
from typing import Any

from . import crd
from .names import API_VERSION

SCOPES = {"Cluster": "cluster-scoped", "Namespaced": "namespaced"}
AUTHORS = {"ModelStore": "cluster admins", "ModelCache": "the teams that serve models",
           "ModelDownload": "the operator only"}
TABLE_HEADER = ["| field | type | required | default | description | validation |",
                "| --- | --- | --- | --- | --- | --- |"]

# Prose that a field table cannot carry, per kind: who writes it, and what the backends mean for tenancy.
NOTES: dict[str, list[str]] = {
    "ModelStore": [
        "A ModelCache names a store in `spec.store` (or gets the store marked `default`), and may use it only "
        "if its namespace matches `spec.namespaceSelector`.",
        "",
        "- **`ossfs2`, `nfs`, `efs`, `hostPath`**: one download per (store, repo, commit, file filter) folder "
        "serves every namespace. Each namespace gets its own read-only PersistentVolume/PersistentVolumeClaim "
        "pair onto the store (`csi.readOnly` for ossfs2 and efs, `nfs.readOnly` for nfs); only the download "
        "Job's claim is writable.",
        "- **`storageClass`**: a dynamically provisioned volume cannot be shared across namespaces safely: it "
        "belongs to one claim in one namespace, and the provisioner may delete it with that claim while "
        "another namespace still reads it. So each namespace gets its own claim from the class and downloads "
        "its own copy of every model.",
        "- **`hostPath`**: refused unless the chart sets `stores.allowHostPath: true`; for single-node "
        "development clusters only.",
        "- **Credentials**: `ossfs2.secretRef` and `hubCredentials` name Secrets in the operator's namespace. "
        "A ModelCache that brings its own `tokenSecretRef` gets a folder private to its namespace instead of "
        "the shared one.",
        "- **Files are removed only by `retention`.** Deleting a ModelCache never deletes files.",
        "- **ossfs2 options of served volumes** (seed 001) are the admin's `otherOpts` followed by what the "
        "operator derives for each cache, and an option the admin set is never derived: `-o prefetch_chunks=-1` "
        "for a GGUF cache (the repo is named `*-GGUF`, or its `allowPatterns` select only `.gguf` weights; about "
        "1.5 GiB of node memory per open file, warned at pod admission), and `-o memory_data_cache_size="
        "<ossfs2.memoryDataCacheSize>` for a cache with `spec.serving.tensorParallelSize` > 1, only where the "
        "admin set that size. A PersistentVolume's source is immutable, so both are fixed when the cache is "
        "created.",
    ],
    "ModelCache": [
        "The operator resolves the store, records the download in a ModelDownload (one per folder, shared "
        "across namespaces where the store allows it) and gives the cache's namespace a read-only claim, which "
        "the webhook injects into the serving pods that opt in.",
    ],
    "ModelDownload": [
        "Internal: never create or edit one. A shared download "
        "lives in the operator's namespace; a private one (a cache with its own `tokenSecretRef`, or any "
        "download to a `storageClass` store) lives in the cache's namespace.",
    ],
}

STATUS_NOTES: dict[str, str] = {
    "ModelStore": "Written by the operator.",
    "ModelCache": "Written by the operator; `status.download` is the report of the cache's ModelDownload, "
                  "copied by the operator.",
    "ModelDownload": "Written by the operator, except `status.download`: the download Job writes it, as a "
                     "ServiceAccount whose Role (created by the operator in the download's namespace) may "
                     "only get and patch this one ModelDownload's status (`resourceNames`).",
}


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if node.get("type") == "array":
        return f"list of {_type(node.get('items', {}))}"
    if node.get("type") == "object" and "additionalProperties" in node:
        return "map of string"
    return str(node.get("type", "object"))


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("maxLength", "max length"),
                       ("maxItems", "max items"), ("maxProperties", "max entries"), ("pattern", "pattern")):
        if key in node:
            value = f"`{node[key]}`" if key == "pattern" else node[key]
            parts.append(f"{label} {value}")
    parts += [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
    return "; ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", r"\|")


def _default(value: Any) -> str:
    if value is None or value == {}:
        return ""
    if isinstance(value, bool) or value == "":
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _rows(node: dict[str, Any], path: str, required: bool) -> list[str]:
    rows = [f"| `{path}` | {_type(node)} | {'yes' if required else ''} | {_default(node.get('default'))} | "
            f"{_cell(node.get('description', ''))} | {_cell(_constraints(node))} |"]
    for name, child in node.get("properties", {}).items():
        rows += _rows(child, f"{path}.{name}", name in node.get("required", []))
    if node.get("type") == "array" and "properties" in node.get("items", {}):
        for name, child in node["items"]["properties"].items():
            rows += _rows(child, f"{path}[].{name}", name in node["items"].get("required", []))
    return rows


def _anchor(kind: crd.Kind) -> str:
    return kind.kind.lower()


def _section(kind: crd.Kind) -> list[str]:
    definition = crd.custom_resource_definition(kind)
    [version] = definition["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    columns = ", ".join(c["name"] for c in kind.columns)
    return [
        f"## {kind.kind}",
        "",
        f"`{API_VERSION}`, {SCOPES[kind.scope]}; `kubectl get {kind.plural}` (short name "
        + ", ".join(f"`{s}`" for s in kind.short_names) + f") shows {columns}.",
        "",
        schema["description"],
        "",
        *NOTES[kind.kind],
        "",
        *TABLE_HEADER,
        *_rows(schema["properties"]["spec"], "spec", True),
        "",
        f"### {kind.kind} status",
        "",
        STATUS_NOTES[kind.kind],
        "",
        *TABLE_HEADER,
        *_rows(schema["properties"]["status"], "status", False),
        "",
    ]


def render_markdown() -> str:
    header = [
        f"# API reference ({API_VERSION})",
        "",
        "Generated by `modelcache-operator docs` from `src/modelcache_operator/api`; do not edit.",
        "The same models generate the CRDs, so every rule below is enforced by the apiserver at apply time.",
        "",
        *(f"- [{kind.kind}](#{_anchor(kind)}): {SCOPES[kind.scope]}, written by {AUTHORS[kind.kind]}."
          for kind in crd.KINDS),
        "",
    ]
    sections = [line for kind in crd.KINDS for line in _section(kind)]
    return "\n".join([*header, *sections])
