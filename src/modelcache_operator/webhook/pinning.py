"""Which revision folder of a ModelCache a new pod gets: the part of admission that reads cache status.

A cache's claim (``status.pvcName``) holds its revision folders; a pod mounts one of them read-only with
``subPath``. ``status.revisionPath`` is the folder of the last published revision (``status.resolvedRevision``)
and ``status.pendingRevisionPath`` the folder of the revision being downloaded, once it is resolved. The rules
are in patch.py's module docstring.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..api.names import ANN_CACHES, ANN_FOLDERS, ANN_INJECTED, ANN_NOT_READY_POLICY, ANN_PINNED
from ..api.v1alpha2 import DownloadRef, ModelCacheSpec, ModelCacheStatus

_SHA_RE = re.compile(r"[0-9a-fA-F]{40}")
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class CacheView:
    """What admission knows of one ModelCache in the pod's namespace."""

    name: str
    spec: ModelCacheSpec
    status: ModelCacheStatus | None


@dataclass(frozen=True)
class Pin:
    """One cache's revision folder, as this pod gets it."""

    name: str
    spec: ModelCacheSpec
    status: ModelCacheStatus
    revision: str
    path: str  # the revision's folder inside the claim: the serving mounts' subPath
    pvc_name: str
    wait: bool  # nothing is published yet: an init container waits for this folder's manifest
    mount_path: str
    download: str | None = None  # "<namespace>/<name>" of the ModelDownload whose folder this is
    volume: str = ""
    gate: bool = False  # nothing is published yet: a scheduling gate holds the pod until it is published

    def prewarm_mode(self, pod_prewarm_off: bool) -> str:
        return "off" if pod_prewarm_off else self.spec.prewarm.mode

    def size_bytes(self) -> int | None:
        if self.status.sizeBytes:
            return self.status.sizeBytes
        if self.status.download and self.status.download.bytesTotal:
            return self.status.download.bytesTotal
        return None

    def mount(self) -> dict[str, Any]:
        return {"name": self.volume, "mountPath": self.mount_path, "readOnly": True, "subPath": self.path}

    def wait_dir(self) -> str:
        """Where the wait container, which mounts the whole claim at mount_path, finds the folder."""
        return f"{self.mount_path.rstrip('/')}/{self.path.strip('/')}"


@dataclass(frozen=True)
class Resolution:
    pin: Pin | None = None
    error: str | None = None
    warning: str | None = None


def cache_name_errors(names: list[str]) -> list[str]:
    """The caches annotation names caches in the pod's namespace, nothing else."""
    errors = []
    for name in names:
        if "/" in name:
            errors.append(
                f'annotation {ANN_CACHES} names "{name}": caches are looked up in the pod\'s namespace only; '
                "a pod cannot use another namespace's cache. Create a ModelCache in this namespace instead"
            )
        elif len(name) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(name):
            errors.append(
                f'annotation {ANN_CACHES} names "{name}", which is not a ModelCache name (a DNS subdomain: '
                'lowercase letters, digits, "-" and ".", at most 253 characters)'
            )
    return errors


def _json_map(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) and value else None


def already_injected(pod: Mapping[str, Any], annotations: Mapping[str, str]) -> bool:
    """Marked injected, and every folder it names is mounted from a PVC volume with that subPath."""
    if annotations.get(ANN_INJECTED) != "true":
        return False
    pinned, folders = _json_map(annotations.get(ANN_PINNED)), _json_map(annotations.get(ANN_FOLDERS))
    if pinned is None or folders is None or set(pinned) != set(folders):
        return False
    spec = pod.get("spec") or {}
    pvc_volumes = {v.get("name") for v in spec.get("volumes") or [] if "persistentVolumeClaim" in v}
    mounted = {
        m.get("subPath")
        for c in spec.get("containers") or []
        for m in c.get("volumeMounts") or []
        if m.get("name") in pvc_volumes
    }
    return all(path in mounted for path in folders.values())


def _ref(ref: DownloadRef | None) -> str | None:
    return f"{ref.namespace}/{ref.name}" if ref else None


def _source_revision(spec: ModelCacheSpec) -> str:
    hub = spec.source.huggingface or spec.source.modelscope
    return hub.revision if hub else ""


def _not_ready_state(status: ModelCacheStatus) -> str:
    parts = [f"phase {status.phase or 'Pending'}"]
    ready = next((c for c in status.conditions or [] if c.type == "Ready"), None)
    if ready is not None:
        detail = f": {ready.message}" if ready.message else ""
        parts.append(f"Ready={ready.status} {ready.reason}{detail}")
    if not status.pvcName:
        parts.append("status.pvcName not set")
    elif not (status.resolvedRevision and status.revisionPath):
        parts.append("no revision published yet")
    return "; ".join(parts)


def _pending(spec: ModelCacheSpec, status: ModelCacheStatus) -> tuple[str, str] | None:
    """(revision, folder) being downloaded for the spec's revision, once both are known."""
    path = status.pendingRevisionPath
    if not path or not status.pvcName:
        return None
    requested = _source_revision(spec)
    report = status.download
    # A report for an older spec revision would pin the wrong commit.
    if report and report.resolvedRevision and report.requestedRevision in (None, requested):
        return report.resolvedRevision, path
    # A spec revision that already is a commit sha, when the pending folder is that commit's.
    if _SHA_RE.fullmatch(requested) and posixpath.basename(path.rstrip("/")) == requested.lower():
        return requested.lower(), path
    return None


def resolve(name: str, view: CacheView | None, override: str | None, namespace: str) -> Resolution:
    """The pin for cache `name`, or why there is none (an error denies the pod, a warning skips the cache)."""
    where = f'in namespace "{namespace}"' if namespace else "in the pod's namespace"
    if view is None:
        missing = f'ModelCache "{name}" not found {where}'
        if override == "ignore":
            return Resolution(warning=f"{missing}; not injected ({ANN_NOT_READY_POLICY} is ignore)")
        return Resolution(error=f"{missing}; create it or remove it from the {ANN_CACHES} annotation")
    status = view.status or ModelCacheStatus()
    mount_path = view.spec.serving.mountPath or f"/models/{name}"

    def pin(revision: str, path: str, hold: str) -> Resolution:
        """hold: "" (published), "wait" (an init container waits) or "gate" (a scheduling gate waits)."""
        pvc = status.pvcName or ""
        # Garbage collection keeps a pod's folders by their download: the one that published the served
        # revision, or the running one for a pod that waits.
        download = _ref(status.downloadRef if hold else status.servedFrom)
        return Resolution(pin=Pin(name, view.spec, status, revision, path, pvc, hold == "wait", mount_path,
                                  download, gate=hold == "gate"))

    # The last published revision, whatever the phase: during a revision change (Downloading, Verifying,
    # Failed) new pods get the complete old revision.
    if status.phase != "Deleting" and status.resolvedRevision and status.revisionPath and status.pvcName:
        return pin(status.resolvedRevision, status.revisionPath, "")
    if override:
        policy, source = override, f"annotation {ANN_NOT_READY_POLICY}"
    else:
        policy, source = view.spec.serving.notReadyPolicy, f'ModelCache "{name}" spec.serving.notReadyPolicy'
    return _unpublished(f'ModelCache "{name}" {where}', view.spec, status, policy=policy, source=source, pin=pin)


def _unpublished(
    cache: str,
    spec: ModelCacheSpec,
    status: ModelCacheStatus,
    *,
    policy: str,
    source: str,
    pin: Callable[[str, str, str], Resolution],
) -> Resolution:
    """Nothing published (or the cache is being deleted): notReadyPolicy decides."""
    what = f"{cache} is not Ready ({_not_ready_state(status)})"
    if policy == "ignore":
        return Resolution(warning=f"{what}; not injected because {source} is ignore")
    if policy == "deny":
        return Resolution(error=f"{what} and {source} is deny; create the pod again once the cache is Ready")
    if status.phase in ("Failed", "Deleting"):
        return Resolution(
            error=f"{what}; {source} is {policy}, but a {status.phase} cache does not become Ready by waiting"
        )
    pending = _pending(spec, status)
    if pending is None:
        return Resolution(
            error=f"{what} and is still resolving its revision and volume; the pod is denied "
            "for now and its controller will retry"
        )
    # gate or wait: the folder of the revision being downloaded, which is the one it will publish.
    return pin(*pending, policy)
