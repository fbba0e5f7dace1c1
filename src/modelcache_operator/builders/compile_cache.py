"""The compile-cache layout of a store and the key of one serving pod's folder. Pure.

    <root>/compile/<namespace>/<gpu>/<engine>-<version>/    written by that namespace's serving pods

`<gpu>` is the value of the node label ``nvidia.com/gpu.product`` (or ``nvidia.com/gpu.family``) that
the pod's own nodeSelector or required node affinity pins to one value at admission. A pod's volumes are
fixed at admission and the downward API cannot expose node labels, so the pod's folder is decided from what
it asks the scheduler for: a pod that may land on several GPU products gets no compile cache (and a
warning), so pods on different architectures never share a folder. Each namespace has its own folder
(the writable PV points at compile/<namespace>): compiled kernels are code, and one tenant's must never
run in another's pods. Model folders (hf/, ms/, private/) are never below compile/.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api.names import LABEL_CACHE_NAMESPACE
from . import naming
from .jobs import RESTRICTED_SECURITY_CONTEXT, RUN_AS_USER

COMPILE_DIR = "compile"
GPU_LABELS = ("nvidia.com/gpu.product", "nvidia.com/gpu.family")
STAMP = ".last-used"  # touched in a key folder at every pod start; LRU eviction orders by its mtime

# The variables each engine reads for its caches, relative to the pod's compile folder.
ENGINE_ENV: dict[str, tuple[tuple[str, str], ...]] = {
    "vllm": (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TRITON_CACHE_DIR", "triton")),
    # SGLANG_JIT_CACHE_ROOT is newer SGLang's one root; the per-component variables win where both exist.
    "sglang": (("SGLANG_JIT_CACHE_ROOT", "sglang"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
               ("TRITON_CACHE_DIR", "triton"), ("FLASHINFER_WORKSPACE_BASE", "flashinfer"),
               ("SGLANG_DG_CACHE_DIR", "deep_gemm")),
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def namespace_root(namespace: str) -> str:
    """The namespace's compile folder, relative to the store root: what its writable PV points at."""
    return f"{COMPILE_DIR}/{namespace}"


def claim_names(namespace: str, store: str) -> tuple[str, str]:
    """(claim in the namespace, PV) of one namespace's writable compile-cache claim on one store."""
    digest = naming.short_hash(namespace, store, COMPILE_DIR)
    claim = naming.bounded(f"modelcache-compile-{store}", naming.DNS_SUBDOMAIN_MAX)
    return claim, naming.bounded(f"modelcache-{namespace}-compile-{digest}", naming.DNS_SUBDOMAIN_MAX)


FOLDER_JOB_ROLE = "compile-folder"
FOLDER_MOUNT = "/compile"


def folder_job(store_body: Mapping[str, Any], namespace: str, writer_claim: str, image: str,
               operator_namespace: str) -> dict[str, Any]:
    """The Job that makes compile/<namespace> exist before any PV points at it (a static NFS or EFS PV on a
    missing path does not mount): it mounts the store's writable root claim with that subPath, which the
    kubelet creates the way it creates download folders, and checks that the downloads' uid can write it.
    Until it succeeded, the namespace's caches name no compile claim, so no pod mounts one."""
    store = store_body["metadata"]["name"]
    labels = naming.child_labels(FOLDER_JOB_ROLE, store=store) | {LABEL_CACHE_NAMESPACE: naming.label_value(namespace)}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": folder_job_name(namespace, store), "namespace": operator_namespace, "labels": labels,
                     "ownerReferences": [naming.owner_reference(dict(store_body), controller=False)]},
        "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 3600,
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "restartPolicy": "Never",
                     "securityContext": {"runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "runAsNonRoot": True},
                     "containers": [{
                         "name": "compile-folder", "image": image, "command": ["test", "-w", FOLDER_MOUNT],
                         "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                         "securityContext": RESTRICTED_SECURITY_CONTEXT,
                         "volumeMounts": [{"name": "store", "mountPath": FOLDER_MOUNT,
                                           "subPath": namespace_root(namespace)}]}],
                     "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": writer_claim}}]}}},
    }


def folder_job_name(namespace: str, store: str) -> str:
    return f"mc-cc-{naming.short_hash(namespace, store, length=16)}"


def _segment(value: str) -> str:
    return _UNSAFE.sub("_", value)[:100] or "_"


def _pinned_values(spec: Mapping[str, Any], label: str) -> set[str] | None:
    """The values `label` may take on the pod's node, or None when the pod does not restrict it."""
    allowed: set[str] | None = None
    selector = (spec.get("nodeSelector") or {}).get(label)
    if selector is not None:
        allowed = {str(selector)}
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms") or []
    # Terms are ORed: each must restrict the label for the union to be known.
    per_term: list[set[str]] = []
    for term in terms:
        values = [set(e.get("values") or []) for e in term.get("matchExpressions") or []
                  if e.get("key") == label and e.get("operator") == "In"]
        if not values:
            per_term = []
            break
        per_term.append(set.intersection(*values))
    if per_term:
        union = set.union(*per_term)
        allowed = union if allowed is None else allowed & union
    return allowed


def gpu_key(pod_spec: Mapping[str, Any]) -> tuple[str, str] | None:
    """(label, value) when the pod can only land on nodes with one GPU product (or family)."""
    for label in GPU_LABELS:
        values = _pinned_values(pod_spec, label)
        if values is not None and len(values) == 1:
            return label, next(iter(values))
    return None


@dataclass(frozen=True)
class Engine:
    name: str
    version: str


def engine_of(image: str) -> Engine | None:
    """vLLM or SGLang and its version, from the image reference: a tag other than latest, or a digest."""
    name, _, digest = image.partition("@")
    repo, tag = name, ""
    if ":" in name.rsplit("/", 1)[-1]:
        repo, tag = name.rsplit(":", 1)
    last = repo.rsplit("/", 1)[-1].lower()
    engine = next((e for e in ENGINE_ENV if e in last), None)
    if engine is None:
        return None
    if digest:
        return Engine(engine, "sha256-" + digest.removeprefix("sha256:")[:16])
    if tag and tag != "latest":
        return Engine(engine, tag)
    return None


def declared_engine(value: str) -> Engine | None:
    """The pod's ``<engine>:<version>`` annotation, for images whose name does not say (a custom build)."""
    engine, _, version = value.partition(":")
    if engine not in ENGINE_ENV or not version or version == "latest" or len(version) > 64:
        return None
    return Engine(engine, version)


def key_folder(gpu_value: str, engine: Engine) -> str:
    """The pod's folder inside the namespace's compile claim."""
    return f"{_segment(gpu_value)}/{_segment(engine.name)}-{_segment(engine.version)}"


def engine_env(engine: str, mount_path: str) -> list[tuple[str, str]]:
    return [(name, f"{mount_path.rstrip('/')}/{sub}") for name, sub in ENGINE_ENV[engine]]


@dataclass(frozen=True)
class Entry:
    folder: str  # "<gpu>/<engine>-<version>"
    size_bytes: int
    last_used: float  # the stamp's mtime; 0 when it has none


def eviction_plan(entries: list[Entry], limit_bytes: int, keep: str) -> list[str]:
    """Folders to remove, least recently used first, until the rest fit under the limit; never `keep`, the
    starting pod's own folder."""
    total = sum(e.size_bytes for e in entries)
    evict: list[str] = []
    for entry in sorted(entries, key=lambda e: (e.last_used, e.folder)):
        if total <= limit_bytes:
            break
        if entry.folder == keep:
            continue
        evict.append(entry.folder)
        total -= entry.size_bytes
    return evict
