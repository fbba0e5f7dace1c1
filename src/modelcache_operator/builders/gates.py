"""Scheduling gates of serving pods under ``notReadyPolicy: gate``: their names, and which of them the
operator may remove. Pure: the operator passes in the pod and the ModelCaches it names.

A gated pod was pinned at admission to the folder of the revision being downloaded (folders are
``<download folder>/<commit>``, so the folder names its content). Its gate for a cache comes off once that
cache publishes exactly that folder: ``status.revisionPath`` equals the pod's folder and
``status.resolvedRevision`` its pinned commit. Until then the pod is never scheduled and holds no node. When
the gate has to stay for a reason the user must act on (the download failed, the cache is being or was
deleted, a newer revision was published instead), that reason is reported once per change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.names import ANN_CACHES, ANN_FOLDERS, ANN_GATE_STATUS, ANN_PINNED, GATE_PREFIX

# The name part of a qualified name (after the "/") has at most 63 characters.
_NAME_LIMIT = 63


def gate_name(cache: str) -> str:
    """The scheduling gate for one cache: ``modelcache.dev/cache-<name>``, long names end in a hash."""
    prefix, stem = GATE_PREFIX.split("/", 1)
    name = stem + cache
    if len(name) > _NAME_LIMIT:
        digest = hashlib.sha256(cache.encode()).hexdigest()[:8]
        name = name[: _NAME_LIMIT - 9].rstrip("-.") + "-" + digest
    return f"{prefix}/{name}"


def _json_map(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def gated_caches(pod: Mapping[str, Any]) -> dict[str, str]:
    """{our gate still on the pod: the cache it waits for}; other gates are never ours to touch."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    by_gate = {gate_name(c): c for c in (n.strip() for n in annotations.get(ANN_CACHES, "").split(",")) if c}
    present = [g.get("name") for g in (pod.get("spec") or {}).get("schedulingGates") or []]
    return {g: by_gate[g] for g in present if g in by_gate}


@dataclass(frozen=True)
class GateCheck:
    remove: list[str] = field(default_factory=list)  # our gates whose cache published the pod's folder
    reports: dict[str, str] = field(default_factory=dict)  # cache -> "<Reason>: <message>" for gates that stay
    released: dict[str, str] = field(default_factory=dict)  # cache -> commit, for the gates removed

    def remaining(self, pod: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The pod's gates without the removed ones, in their order (ours and everyone else's)."""
        gates = (pod.get("spec") or {}).get("schedulingGates") or []
        return [g for g in gates if g.get("name") not in self.remove]

    def new_reports(self, pod: Mapping[str, Any]) -> dict[str, str]:
        """Reports that differ from what the pod's gate-status annotation already says."""
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        seen = _json_map(annotations.get(ANN_GATE_STATUS))
        return {cache: text for cache, text in self.reports.items() if seen.get(cache) != text}


def _ready_reason(status: Mapping[str, Any]) -> tuple[str, str]:
    ready: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return str(ready.get("reason") or "Unknown"), str(ready.get("message") or "")


def _deleting(body: Mapping[str, Any]) -> bool:
    return bool((body.get("status") or {}).get("phase") == "Deleting"
                or (body.get("metadata") or {}).get("deletionTimestamp"))


def _why_it_stays(cache: str, body: Mapping[str, Any] | None, folder: str, commit: str) -> str | None:
    """"<Reason>: <message>" when the gate stays for something a user must act on, None while it just waits."""
    if body is None:
        return (f'CacheDeleted: ModelCache "{cache}" was deleted while this pod waited for it; the pod stays '
                f"gated (its volume names folder {folder}); delete the pod, or create the cache again")
    status = body.get("status") or {}
    phase = status.get("phase")
    if _deleting(body):
        return (f'CacheDeleting: ModelCache "{cache}" is being deleted; the pod stays gated and will not '
                "get its files; delete the pod")
    published = status.get("resolvedRevision")
    if published and status.get("revisionPath") and published != commit:
        return (f'RevisionSuperseded: ModelCache "{cache}" published revision {published}, not the '
                f"revision {commit} this pod was pinned to at admission; the pod stays gated; delete it so "
                "that its controller creates one with the published revision")
    if phase == "Failed":
        reason, message = _ready_reason(status)
        detail = f": {message}" if message else ""
        return (f'DownloadFailed: ModelCache "{cache}" failed ({reason}{detail}); the pod stays gated until '
                "a retry publishes its revision")
    return None


def check_gates(pod: Mapping[str, Any], caches: Mapping[str, Mapping[str, Any] | None]) -> GateCheck:
    """Which of our gates come off now, and why the others stay. `caches` maps each gated cache's name to
    its ModelCache body, or None when it does not exist."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    folders, pinned = _json_map(annotations.get(ANN_FOLDERS)), _json_map(annotations.get(ANN_PINNED))
    check = GateCheck()
    for gate, cache in gated_caches(pod).items():
        body = caches.get(cache)
        folder, commit = str(folders.get(cache, "")), str(pinned.get(cache, ""))
        status = (body or {}).get("status") or {}
        if (body is not None and not _deleting(body) and folder and commit
                and status.get("revisionPath") == folder and status.get("resolvedRevision") == commit):
            check.remove.append(gate)
            check.released[cache] = commit
            continue
        why = _why_it_stays(cache, body, folder, commit)
        if why:
            check.reports[cache] = why
    return check
