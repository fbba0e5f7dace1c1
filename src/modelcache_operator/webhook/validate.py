"""ModelCache admission checks that CEL cannot express, because they need the other ModelCaches.

`validate_modelcache(spec, namespace, existing)` is pure: the handler lists the other caches and passes them.

Decisions:

- **Shared storage is an error**, across namespaces too, because every cache gets its own static PV.
  Two caches whose locations are equal *or nested* (one path inside the other) would collide: the
  download lock, revision GC and the Delete reclaim Job of one would touch the other's files.
- A location is (backend, volume key, path): ossfs2 (bucket, path), nfs (server, path), efs
  (fileSystemId, accessPointId, path or "/"), hostPath (path). The OSS endpoint is ignored (bucket
  names are global) and NFS server names compare case-insensitively. storageClass volumes are
  provisioned per claim and never clash.
- Specs are read as plain dicts, not through the pydantic models, so that an older or newer stored object
  with unknown fields still takes part in the check.
- Warning: hostPath storage is for single-node development clusters.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

Location = tuple[str, tuple[str, ...], str]


def _norm_path(path: object) -> str:
    return posixpath.normpath("/" + str(path or "/").strip("/"))


def storage_location(spec: Mapping[str, Any]) -> Location | None:
    """(backend, key, normalised path) of a cache's storage, or None when it cannot clash."""
    storage = spec.get("storage") or {}
    if oss := storage.get("ossfs2"):
        return "ossfs2", (str(oss.get("bucket")),), _norm_path(oss.get("path"))
    if nfs := storage.get("nfs"):
        return "nfs", (str(nfs.get("server", "")).lower(),), _norm_path(nfs.get("path"))
    if efs := storage.get("efs"):
        return (
            "efs",
            (str(efs.get("fileSystemId")), str(efs.get("accessPointId") or "")),
            _norm_path(efs.get("path")),
        )
    if host := storage.get("hostPath"):
        return "hostPath", (), _norm_path(host.get("path"))
    return None


def _describe(location: Location) -> str:
    backend, key, path = location
    if backend == "efs":
        detail = f"fileSystemId {key[0]} " + (f"accessPointId {key[1]} " if key[1] else "")
    elif key:
        detail = f"{'bucket' if backend == 'ossfs2' else 'server'} {key[0]} "
    else:
        detail = ""
    return f"spec.storage.{backend} ({detail}path {path})"


def _relation(a: str, b: str) -> str | None:
    if a == b:
        return "is the same location as"
    if b == "/" or a.startswith(b + "/"):
        return "is inside"
    if a == "/" or b.startswith(a + "/"):
        return "contains"
    return None


def validate_modelcache(
    spec: Mapping[str, Any],
    namespace: str,
    existing: Iterable[tuple[str, str, Mapping[str, Any]]],
    *,
    name: str | None = None,
) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a ModelCache CREATE or UPDATE.

    `existing` holds the other caches as (namespace, name, spec); an entry for this cache itself
    ((namespace, name), when `name` is given) is skipped, so the handler may pass the full list on UPDATE.
    """
    errors: list[str] = []
    warnings: list[str] = []
    mine = storage_location(spec)
    if mine is None:
        return errors, warnings
    if mine[0] == "hostPath":
        warnings.append(
            "spec.storage.hostPath is a node directory, for single-node development clusters only"
        )
    for other_ns, other_name, other_spec in existing:
        if (other_ns, other_name) == (namespace, name):
            continue
        theirs = storage_location(other_spec)
        if theirs is None or theirs[:2] != mine[:2]:
            continue
        relation = _relation(mine[2], theirs[2])
        if relation is None:
            continue
        errors.append(
            f"{_describe(mine)} {relation} the storage of ModelCache {other_ns}/{other_name} "
            f"({_describe(theirs)}); two ModelCaches must not share or nest storage, pick another path"
        )
    return errors, warnings
