"""Pod admission: the pure function that turns an opted-in Pod into an RFC 6902 JSON Patch.

`mutate_pod(pod, caches, settings)` does no I/O. The admission handler looks up the ModelCaches named by
the pod in the pod's namespace and passes them in as `CacheView`s (or None when one does not exist).
Pinning lives in pinning.py, pod edits in pod_shape.py, engine flags in engines.py, memory warnings in
memory.py, the injected commands in commands.py, our volumes and init containers in injection.py and the
target containers' edits in targets.py; this module decides what goes into the pod.

Opt-in: label ``modelcache.dev/inject: "true"`` and annotation ``modelcache.dev/caches: "a,b"`` (the first
name is the primary cache). Optional annotations: ``modelcache.dev/containers`` (target containers),
``modelcache.dev/not-ready-policy`` (gate|wait|deny|ignore, overrides ``spec.serving.notReadyPolicy``) and
``modelcache.dev/prewarm`` (off|on).

Decisions (the "why" behind behaviour that the contract left open):

- **Pinning.** A cache with a published revision (``status.resolvedRevision``, ``status.revisionPath`` and
  ``status.pvcName`` set) pins it, mounted with subPath ``status.revisionPath``, whatever the phase unless
  Deleting: during a revision change the phase is Downloading, Verifying or Failed, and new pods get the
  complete old revision. Only when nothing was ever published does ``notReadyPolicy`` apply. Under
  ``gate`` (the default) and ``wait`` the pod pins ``status.download.resolvedRevision`` (only when that
  report is for the revision the spec asks for) in ``status.pendingRevisionPath``; a spec revision that
  already is a 40-hex commit sha is pinned when the pending folder is that commit's. Folders are
  ``<download folder>/<commit>``, so the pinned folder is the one the download will publish. Without a
  pending folder the pod is denied for now (its controller retries; resolving takes the Job seconds).
- **Gates.** Under ``gate`` the pod gets one scheduling gate ``modelcache.dev/cache-<name>`` per such
  cache and mounts the pending folder with subPath directly (no wait container: the gate comes off only
  once that folder is published, see builders/gates.py). The scheduler never sees a gated pod, so it holds
  no node and no GPU while the model downloads.
- **Namespaces.** Caches are looked up in the pod's namespace only: an entry of the caches annotation with
  a "/" or that is not a DNS subdomain name denies the pod.
- **Missing caches** are denied under gate/wait/deny (nothing to mount, and a typo should be loud) and skipped
  with a warning under ignore. Only the pod annotation can say ignore for a missing cache.
- **Failed or Deleting caches with nothing to serve are denied under gate and wait**: the pod would wait
  for a manifest that is not coming.
- **Invalid annotation values and unknown container names deny the pod.** Warnings on controller-created
  pods reach only the controller's log, while a denial shows up as a FailedCreate event on the owner.
- **Init container order:** ours come first (tools, then one wait per waiting cache, then the
  initContainer-mode prewarm), before the user's init containers, which may read the model.
- **Wait containers mount the whole cache volume without subPath** and wait for
  ``<mountPath>/<pendingRevisionPath>/.modelcache/manifest.json``. With a subPath the kubelet would have to
  create the revision folder on a read-only volume, fail with CreateContainerConfigError and log nothing.
  The serving mounts use subPath ``pendingRevisionPath``.
- **Env is prepended** so that user env entries can refer to ``$(MODEL_DIR)``, and never replaces a name
  the container already sets. ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``/``HF_HUB_DISABLE_TELEMETRY`` are
  set when a pinned cache comes from Hugging Face. ModelScope gets no offline variable: the modelscope
  library (1.40) reads none. ``MODEL_DIR`` is set only when the primary cache is pinned.
- **postStart logs** go to a small emptyDir ``modelcache-prewarm-log`` mounted read-write at
  ``settings.log_dir`` (one file per container), because the tools emptyDir is read-only in serving
  containers.
- **A user's exec postStart is chained**: ``/bin/sh -c '<ours>; exec "$@"' modelcache-poststart <argv...>``.
  The user's argv travels as positional parameters and is never put into shell text; their hook still
  decides the exit status. httpGet/tcpSocket/sleep hooks cannot be chained, so the pod is denied.
- **Resources.** The tools and wait init containers get tiny requests equal to their limits, so a
  Guaranteed pod stays Guaranteed. The prewarm init container copies the first target container's cpu and
  memory, because page cache is charged to the cgroup that reads it and a small limit would evict the
  pages as fast as they are read.
- **Annotations** on the pod: ``modelcache.dev/pinned-revisions`` (``{cache: commit}``),
  ``modelcache.dev/folders`` (``{cache: subPath}``) and ``modelcache.dev/downloads`` (``{cache:
  "<namespace>/<ModelDownload>"}``: ``status.servedFrom`` for a published revision, ``status.downloadRef``
  for a waiting pod; garbage collection keeps those downloads' folders while the pod lives).
- **Idempotence.** A pod that already has ``modelcache.dev/injected: "true"`` and a PVC volume mounted with
  each subPath of its folders annotation gets an empty patch. Every step is also idempotent on its own, so
  partial re-admissions add nothing twice.
- **Targets.** Without ``modelcache.dev/containers`` the containers requesting any ``*/gpu`` resource get
  mounts, env and the hook, else the first container. An empty annotation value means no container: the
  volume, pin and wait gate are still added, prewarm is skipped with a warning.
- **Names.** Volumes are ``mc-<cache>`` (dots become dashes, names over 63 characters end in a hash); a
  different volume with that name moves ours to ``-2``, ``-3``, ... Two caches whose ``MODEL_DIR_<NAME>``
  collide (``a.b`` and ``a-b``) keep the first and warn. Two caches on one mount path, or a user mount at
  one of our paths, deny the pod (the apiserver would reject it less clearly).
- **Wait timeout** is the cache's ``spec.download.activeDeadlineSeconds``: past it the download Job has
  failed anyway, and the init container's restart backoff takes over.
- **Memory warnings** compare each target container's ``limits.memory`` with the prewarmed size
  (``status.sizeBytes``, else ``status.download.bytesTotal``) plus ``max(2 GiB, 10 %)`` overhead.
- **Compile cache** (see compile_cache.py): one writable subPath of the namespace's compile claim at
  ``settings.compile_dir`` with the engine's cache variables, and an init container that creates that
  folder and evicts least recently used ones over the store's cap.
- **Engine flags** that waste the cache or undo prewarm are listed in ``engines.ENGINE_FLAGS``, each with
  why.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..api.names import (
    ANN_CACHES,
    ANN_CONTAINERS,
    ANN_DOWNLOADS,
    ANN_FOLDERS,
    ANN_INJECTED,
    ANN_NOT_READY_POLICY,
    ANN_PINNED,
    ANN_PREWARM,
    ANN_PREWARM_SKIPPED,
    LABEL_INJECT,
)
from ..builders.gates import gate_name
from ..builders.pins import downloads_annotation
from .compile_cache import plan_compile_cache
from .injection import InjectionSettings, init_containers, plan_injection
from .pinning import CacheView, Pin, already_injected, cache_name_errors, resolve
from .pod_shape import PodMutation, split_names, target_containers
from .targets import cache_env, edit_target

NOT_READY_POLICIES = ("gate", "wait", "deny", "ignore")
PREWARM_VALUES = ("off", "on")


@dataclass(frozen=True)
class AdmissionDecision:
    allowed: bool
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    message: str | None = None


def _allow(warnings: list[str] | None = None) -> AdmissionDecision:
    return AdmissionDecision(allowed=True, warnings=warnings or [])


def _deny(errors: list[str], warnings: list[str]) -> AdmissionDecision:
    return AdmissionDecision(allowed=False, warnings=warnings, message="; ".join(errors))


def mutate_pod(
    pod: Mapping[str, Any],
    caches: Mapping[str, CacheView | None],
    settings: InjectionSettings,
    *,
    namespace: str | None = None,
) -> AdmissionDecision:
    """Decide on one Pod CREATE. `namespace` is the request's namespace (a new pod may not carry it yet)."""
    metadata = pod.get("metadata") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    if (metadata.get("labels") or {}).get(LABEL_INJECT) != "true":
        return _allow()
    names = split_names(annotations.get(ANN_CACHES, ""))
    if not names:
        return _allow(
            [
                f"pod has label {LABEL_INJECT}=true but no ModelCache names in annotation {ANN_CACHES}; "
                "nothing injected"
            ]
        )
    if already_injected(pod, annotations):
        return _allow()

    mutation = PodMutation(pod)
    errors, warnings = mutation.errors, mutation.warnings
    errors.extend(cache_name_errors(names))
    override, pod_prewarm_off = _read_annotations(annotations, errors)
    targets = target_containers(mutation.containers, annotations.get(ANN_CONTAINERS), errors)
    if errors:
        return _deny(errors, warnings)
    pins = _resolve_all(names, caches, override, namespace or metadata.get("namespace") or "", mutation)
    if errors:
        return _deny(errors, warnings)
    if not pins:
        return _allow(warnings)

    if not targets:
        warnings.extend(_unwarmed(pins))
    # Without a target container nothing would read what is warmed.
    compile_plan = plan_compile_cache(pins, mutation, targets, annotations)
    plan = plan_injection(pins, pod_prewarm_off or not targets, mutation, settings, compile_plan)
    mutation.init_containers(init_containers(plan, mutation, targets))
    mutation.scheduling_gates([gate_name(p.name) for p in plan.pins if p.gate])
    env = cache_env(names, plan.pins, warnings)
    skipped: dict[str, str] = {}
    for index in targets:
        reason = edit_target(plan, mutation, index, env)
        if reason:
            skipped[str(mutation.containers[index].get("name"))] = reason
    mutation.annotations(
        {
            **({ANN_PREWARM_SKIPPED: json.dumps(skipped, sort_keys=True)} if skipped else {}),
            ANN_PINNED: json.dumps({p.name: p.revision for p in plan.pins}, sort_keys=True),
            ANN_FOLDERS: json.dumps({p.name: p.path for p in plan.pins}, sort_keys=True),
            ANN_DOWNLOADS: downloads_annotation({p.name: p.download for p in plan.pins if p.download}),
            ANN_INJECTED: "true",
        }
    )
    if errors:
        return _deny(errors, warnings)
    # Deep copy: shared dicts (mounts, resources) must not alias inside the patched pod.
    return AdmissionDecision(allowed=True, patch=copy.deepcopy(mutation.ops), warnings=warnings)


def _read_annotations(annotations: Mapping[str, str], errors: list[str]) -> tuple[str | None, bool]:
    """(not-ready policy override, prewarm off for the whole pod)."""
    override = annotations.get(ANN_NOT_READY_POLICY)
    if override is not None and override not in NOT_READY_POLICIES:
        errors.append(
            f"annotation {ANN_NOT_READY_POLICY} is {override!r}; use one of " + ", ".join(NOT_READY_POLICIES)
        )
    prewarm_value = annotations.get(ANN_PREWARM, "on")
    if prewarm_value not in PREWARM_VALUES:
        errors.append(f"annotation {ANN_PREWARM} is {prewarm_value!r}; use off or on")
    return override, prewarm_value == "off"


def _resolve_all(
    names: list[str],
    caches: Mapping[str, CacheView | None],
    override: str | None,
    namespace: str,
    mutation: PodMutation,
) -> list[Pin]:
    """The pins of every named cache, each with its volume; problems land in the mutation's lists."""
    pins: list[Pin] = []
    for name in names:
        resolution = resolve(name, caches.get(name), override, namespace)
        if resolution.error:
            mutation.errors.append(resolution.error)
        if resolution.warning:
            mutation.warnings.append(resolution.warning)
        if resolution.pin:
            pins.append(resolution.pin)
    if mutation.errors:
        return []
    seen_paths: dict[str, str] = {}
    for pin in pins:
        other = seen_paths.setdefault(pin.mount_path.rstrip("/"), pin.name)
        if other != pin.name:
            mutation.errors.append(
                f'ModelCaches "{other}" and "{pin.name}" both mount at {pin.mount_path}; set '
                "spec.serving.mountPath on one of them"
            )
    if mutation.errors:
        return []
    return [
        replace(
            p,
            volume=mutation.volume(
                f"mc-{p.name}", {"persistentVolumeClaim": {"claimName": p.pvc_name, "readOnly": True}}
            ),
        )
        for p in pins
    ]


def _unwarmed(pins: list[Pin]) -> list[str]:
    return [
        f'ModelCache "{p.name}" has prewarm mode {p.spec.prewarm.mode} but no container in '
        f"this pod receives it ({ANN_CONTAINERS} lists none); nothing is warmed"
        for p in pins
        if p.spec.prewarm.mode != "off"
    ]


