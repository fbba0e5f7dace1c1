"""Pod admission: the pure function that turns an opted-in Pod into an RFC 6902 JSON Patch.

`mutate_pod(pod, caches, settings)` does no I/O. The admission handler looks up the ModelCaches named by
the pod and passes them in as `CacheView`s (or None when one does not exist).

Opt-in: label ``modelcache.dev/inject: "true"`` and annotation ``modelcache.dev/caches: "a,b"`` (the first
name is the primary cache). Optional annotations: ``modelcache.dev/containers`` (target containers),
``modelcache.dev/not-ready-policy`` (wait|deny|ignore, overrides ``spec.serving.notReadyPolicy``) and
``modelcache.dev/prewarm`` (off|on).

Decisions (the "why" behind behaviour that the contract left open):

- **Pinning.** A Ready cache pins ``status.resolvedRevision``. Under ``wait`` a not-Ready cache pins
  ``status.download.resolvedRevision`` (only when that report is for the revision the spec asks for), else
  a spec revision that already is a 40-hex commit sha. A cache without ``status.pvcName`` is not Ready.
- **Missing caches** are denied under wait/deny (nothing to mount, and a typo should be loud) and skipped
  with a warning under ignore. Only the pod annotation can say ignore for a missing cache.
- **Failed or Deleting caches under wait are denied**: an init container would wait for a manifest that
  is not coming.
- **Invalid annotation values and unknown container names deny the pod.** Warnings on controller-created
  pods reach only the controller's log, while a denial shows up as a FailedCreate event on the owner.
- **Init container order:** ours come first (tools, then one wait per not-Ready cache, then the
  initContainer-mode prewarm), before the user's init containers, which may read the model.
- **Wait containers mount the whole cache volume without subPath** and wait for
  ``<mountPath>/<rev>/.modelcache/manifest.json``. With a subPath the kubelet would have to create the
  revision folder on a read-only volume, fail with CreateContainerConfigError and log nothing.
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
- **Idempotence.** A pod that already has ``modelcache.dev/injected: "true"`` and, for each pinned revision,
  a PVC volume mounted with that subPath, gets an empty patch. Every step is also idempotent on its own
  (identical volumes, mounts, init containers and hooks are reused), so partial re-admissions add nothing
  twice.
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
  (``status.sizeBytes``, else ``status.download.bytesTotal``) plus ``max(2 GiB, 10 %)`` overhead
  (seed 001: the limit must exceed model size + server overhead + slack, or the warmed pages are reclaimed).
- **Engine flags** that waste the cache or undo prewarm are listed in ``ENGINE_FLAGS``, each with why.
  They are found in command and args, including inside ``sh -c "..."`` strings.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, Protocol

from modelcache_operator.api.v1alpha1 import GROUP, ModelCacheSpec, ModelCacheStatus

LABEL_INJECT = f"{GROUP}/inject"
ANN_CACHES = f"{GROUP}/caches"
ANN_CONTAINERS = f"{GROUP}/containers"
ANN_NOT_READY_POLICY = f"{GROUP}/not-ready-policy"
ANN_PREWARM = f"{GROUP}/prewarm"
ANN_PINNED = f"{GROUP}/pinned-revisions"
ANN_INJECTED = f"{GROUP}/injected"

TOOLS_VOLUME = "modelcache-tools"
LOG_VOLUME = "modelcache-prewarm-log"
TOOLS_INIT = "modelcache-tools"
PREWARM_INIT = "modelcache-prewarm"
WAIT_INIT_PREFIX = "modelcache-wait-"
# $0 of the chained postStart shell; also how a chained hook is recognised.
CHAIN_ARGV0 = "modelcache-poststart"

GIB = 1 << 30
NOT_READY_POLICIES = ("wait", "deny", "ignore")
PREWARM_VALUES = ("off", "on")
HF_ENV = (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"))
_SHA_RE = re.compile(r"[0-9a-fA-F]{40}")
_SMALL_EMPTYDIR = "16Mi"
# requests == limits: keeps a Guaranteed pod Guaranteed.
_TINY_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "50m", "memory": "64Mi"},
}


# ----- command builders (the prewarm program's contract) -----


class PoststartCommand(Protocol):
    def __call__(
        self, tools_dir: str, model_dirs: list[str], concurrency: int, timeout_seconds: int, log_file: str
    ) -> list[str]: ...


class WaitCommand(Protocol):
    def __call__(self, tools_dir: str, model_dir: str, timeout_seconds: int) -> list[str]: ...


class InstallCommand(Protocol):
    def __call__(self, tools_dir: str) -> list[str]: ...


class WarmCommand(Protocol):
    def __call__(
        self, tools_dir: str, model_dirs: list[str], concurrency: int, timeout_seconds: int
    ) -> list[str]: ...


# The prewarm hook module is imported lazily (noqa PLC0415) so this module and its tests do not depend on it;
# tests inject their own builders through InjectionSettings.


def default_poststart_command(
    tools_dir: str, model_dirs: list[str], concurrency: int, timeout_seconds: int, log_file: str
) -> list[str]:
    from modelcache_operator.prewarm import hook  # noqa: PLC0415

    return hook.poststart_command(tools_dir, model_dirs, concurrency, timeout_seconds, log_file)


def default_wait_command(tools_dir: str, model_dir: str, timeout_seconds: int) -> list[str]:
    from modelcache_operator.prewarm import hook  # noqa: PLC0415

    return hook.wait_command(tools_dir, model_dir, timeout_seconds)


def default_install_command(tools_dir: str) -> list[str]:
    from modelcache_operator.prewarm import hook  # noqa: PLC0415

    return hook.install_command(tools_dir)


def default_warm_command(
    tools_dir: str, model_dirs: list[str], concurrency: int, timeout_seconds: int
) -> list[str]:
    dirs = [arg for d in model_dirs for arg in ("--dir", d)]
    # Same interpreter flags as the hook: ignore PYTHON* env and site-packages; prewarm.py is stdlib-only.
    return [
        "python3",
        "-I",
        "-S",
        f"{tools_dir.rstrip('/')}/prewarm.py",
        "warm",
        *dirs,
        "--concurrency",
        str(concurrency),
        "--timeout",
        str(timeout_seconds),
    ]


# ----- public types -----


@dataclass(frozen=True)
class CacheView:
    name: str
    spec: ModelCacheSpec
    status: ModelCacheStatus | None


@dataclass(frozen=True)
class InjectionSettings:
    operator_image: str
    tools_dir: str = "/opt/modelcache"
    log_dir: str = "/var/log/modelcache"
    image_pull_policy: str = "IfNotPresent"
    # Our init containers run as this non-root uid (restricted Pod Security); model files must be readable.
    run_as_user: int = 65532
    memory_overhead_min_bytes: int = 2 * GIB
    memory_overhead_fraction: float = 0.10
    poststart_command: PoststartCommand = default_poststart_command
    wait_command: WaitCommand = default_wait_command
    install_command: InstallCommand = default_install_command
    warm_command: WarmCommand = default_warm_command


@dataclass(frozen=True)
class AdmissionDecision:
    allowed: bool
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    message: str | None = None


# ----- engine flags that waste or undo the warm cache -----


@dataclass(frozen=True)
class EngineFlag:
    flag: str  # "--name", dashes (underscores in pod args are normalised)
    value: str | None  # the value that matters, or None for a bare flag
    prewarm_only: bool  # only a problem while prewarm is on
    why: str


ENGINE_FLAGS: tuple[EngineFlag, ...] = (
    # vLLM and SGLang both have LoadFormat.DUMMY: random weights, the checkpoint is never read.
    EngineFlag(
        "--load-format",
        "dummy",
        False,
        "initialises random weights and never reads the model files, so the cache is unused",
    ),
    # SGLang posix_fadvise(DONTNEED)s each checkpoint file after loading it: it evicts what prewarm loaded,
    # and a container restart reads from storage again.
    EngineFlag(
        "--weight-loader-drop-cache-after-load",
        None,
        True,
        "drops the page cache of every checkpoint file after loading, undoing prewarm",
    ),
)


# ----- helpers -----


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def json_pointer(*parts: str | int) -> str:
    return "".join("/" + _escape(str(p)) for p in parts)


def _split_names(value: str) -> list[str]:
    return list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))


def _dns_label(base: str, suffix: str = "") -> str:
    """A valid DNS label (volume and container names): '.' becomes '-', long names end in a hash."""
    base = re.sub(r"[^a-z0-9-]", "-", base.lower())
    limit = 63 - len(suffix)
    if len(base) > limit:
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        base = base[: limit - 9].rstrip("-") + "-" + digest
    return base + suffix


def env_name(cache: str) -> str:
    return "MODEL_DIR_" + re.sub(r"[^A-Z0-9]", "_", cache.upper())


_QUANTITY_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$")
_SUFFIXES: dict[str, Decimal] = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
}


def parse_quantity(value: object) -> int | None:
    """Bytes in a Kubernetes quantity ("800Gi", "1.5G", "129e6"), rounded up; None when unparsable."""
    match = _QUANTITY_RE.match(str(value).strip())
    if not match:
        return None
    number, exponent, suffix = match.groups()
    try:
        amount = Decimal(number) * (Decimal(f"1{exponent}") if exponent else _SUFFIXES.get(suffix or "", 1))
    except InvalidOperation:
        return None
    return int(amount.to_integral_value(rounding=ROUND_CEILING))


def human_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def chain_poststart(ours: list[str], user_argv: list[str]) -> list[str]:
    """Run our hook, then exec the user's exec hook with its argv as positional parameters, untouched."""
    return ["/bin/sh", "-c", f'{shlex.join(ours)}; exec "$@"', CHAIN_ARGV0, *user_argv]


def _argv_tokens(container: Mapping[str, Any]) -> list[str]:
    # Split each element too: engines are often started as `sh -c "python3 -m sglang... --flag"`.
    tokens: list[str] = []
    for item in [*(container.get("command") or []), *(container.get("args") or [])]:
        try:
            tokens.extend(shlex.split(str(item)))
        except ValueError:
            tokens.extend(str(item).split())
    return tokens


def engine_flag_hits(container: Mapping[str, Any], prewarm_on: bool) -> list[tuple[EngineFlag, str]]:
    """(flag, text as written) for every ENGINE_FLAGS entry that the container's command line uses."""
    tokens = _argv_tokens(container)
    hits: list[tuple[EngineFlag, str]] = []
    for i, token in enumerate(tokens):
        if not token.startswith("--"):
            continue
        name, eq, inline = token.partition("=")
        name = name.replace("_", "-")
        for flag in ENGINE_FLAGS:
            if flag.flag != name or (flag.prewarm_only and not prewarm_on):
                continue
            if flag.value is None:
                hits.append((flag, name))
                continue
            value = inline if eq else (tokens[i + 1] if i + 1 < len(tokens) else "")
            if value == flag.value:
                hits.append((flag, f"{name} {value}"))
    return hits


def _requests_gpu(container: Mapping[str, Any]) -> bool:
    resources = container.get("resources") or {}
    return any(
        str(key).endswith("/gpu") for kind in ("limits", "requests") for key in resources.get(kind) or {}
    )


def _source_revision(spec: ModelCacheSpec) -> str:
    hub = spec.source.huggingface or spec.source.modelscope
    return hub.revision if hub else ""


# ----- pinning -----


@dataclass(frozen=True)
class _Pin:
    name: str
    spec: ModelCacheSpec
    status: ModelCacheStatus
    revision: str
    pvc_name: str
    wait: bool
    mount_path: str
    volume: str = ""

    def prewarm_mode(self, pod_prewarm_off: bool) -> str:
        return "off" if pod_prewarm_off else self.spec.prewarm.mode

    def size_bytes(self) -> int | None:
        if self.status.sizeBytes:
            return self.status.sizeBytes
        if self.status.download and self.status.download.bytesTotal:
            return self.status.download.bytesTotal
        return None


@dataclass(frozen=True)
class _Resolution:
    pin: _Pin | None = None
    error: str | None = None
    warning: str | None = None


def _not_ready_state(status: ModelCacheStatus) -> str:
    parts = [f"phase {status.phase or 'Pending'}"]
    ready = next((c for c in status.conditions or [] if c.type == "Ready"), None)
    if ready is not None:
        detail = f": {ready.message}" if ready.message else ""
        parts.append(f"Ready={ready.status} {ready.reason}{detail}")
    if not status.pvcName:
        parts.append("status.pvcName not set")
    return "; ".join(parts)


def _known_revision(spec: ModelCacheSpec, status: ModelCacheStatus) -> str | None:
    requested = _source_revision(spec)
    report = status.download
    # A report for an older spec revision would pin the wrong commit.
    if report and report.resolvedRevision and report.requestedRevision in (None, requested):
        return report.resolvedRevision
    return requested.lower() if _SHA_RE.fullmatch(requested) else None


def _resolve(name: str, view: CacheView | None, override: str | None, namespace: str) -> _Resolution:
    where = f'in namespace "{namespace}"' if namespace else "in the pod's namespace"
    if view is None:
        missing = f'ModelCache "{name}" not found {where}'
        if override == "ignore":
            return _Resolution(warning=f"{missing}; not injected ({ANN_NOT_READY_POLICY} is ignore)")
        return _Resolution(error=f"{missing}; create it or remove it from the {ANN_CACHES} annotation")
    if override:
        policy, source = override, f"annotation {ANN_NOT_READY_POLICY}"
    else:
        policy, source = view.spec.serving.notReadyPolicy, f'ModelCache "{name}" spec.serving.notReadyPolicy'
    status = view.status or ModelCacheStatus()
    mount_path = view.spec.serving.mountPath or f"/models/{name}"

    def pin(revision: str, wait: bool) -> _Resolution:
        return _Resolution(
            pin=_Pin(name, view.spec, status, revision, status.pvcName or "", wait, mount_path)
        )

    if status.phase == "Ready" and status.resolvedRevision and status.pvcName:
        return pin(status.resolvedRevision, wait=False)
    what = f'ModelCache "{name}" {where} is not Ready ({_not_ready_state(status)})'
    if policy == "ignore":
        return _Resolution(warning=f"{what}; not injected because {source} is ignore")
    if policy == "deny":
        return _Resolution(error=f"{what} and {source} is deny; create the pod again once the cache is Ready")
    if status.phase in ("Failed", "Deleting"):
        return _Resolution(
            error=f"{what}; {source} is wait, but a {status.phase} cache does not become Ready by waiting"
        )
    revision = _known_revision(view.spec, status)
    if revision is None or not status.pvcName:
        return _Resolution(
            error=f"{what} and is still resolving its revision and volume; the pod is denied "
            "for now and its controller will retry"
        )
    return pin(revision, wait=True)


# ----- the patch -----


class _Mutation:
    """Accumulates JSON Patch ops, warnings and errors against one pod."""

    def __init__(self, pod: Mapping[str, Any], settings: InjectionSettings) -> None:
        self.pod = pod
        self.settings = settings
        self.spec: Mapping[str, Any] = pod.get("spec") or {}
        self.containers: list[dict[str, Any]] = list(self.spec.get("containers") or [])
        self.ops: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.volumes: dict[str, Mapping[str, Any]] = {
            v.get("name", ""): v for v in self.spec.get("volumes") or []
        }
        self._new_volumes: list[dict[str, Any]] = []

    # volumes

    def volume(self, base: str, source: dict[str, Any]) -> str:
        """Name of an identical existing volume, else a fresh name (base, base-2, ...) for a new one."""
        n = 1
        while True:
            name = _dns_label(base, "" if n == 1 else f"-{n}")
            wanted = {"name": name, **source}
            current = self.volumes.get(name)
            if current is None:
                self.volumes[name] = wanted
                self._new_volumes.append(wanted)
                return name
            if current == wanted:
                return name
            n += 1

    def flush_volumes(self) -> None:
        if not self._new_volumes:
            return
        if "volumes" in self.spec:
            self.ops.extend({"op": "add", "path": "/spec/volumes/-", "value": v} for v in self._new_volumes)
        else:
            self.ops.append({"op": "add", "path": "/spec/volumes", "value": self._new_volumes})

    # init containers

    def init_containers(self, wanted: list[dict[str, Any]]) -> None:
        existing = {
            c.get("name"): c for key in ("initContainers", "containers") for c in self.spec.get(key) or []
        }
        new: list[dict[str, Any]] = []
        for container in wanted:
            current = existing.get(container["name"])
            if current is None:
                new.append(container)
            elif current != container:
                self.errors.append(
                    f'the pod already has a container named "{container["name"]}", which '
                    "ModelCache injection needs; rename it"
                )
        if not new:
            return
        if "initContainers" not in self.spec:
            self.ops.append({"op": "add", "path": "/spec/initContainers", "value": new})
            return
        # Ours go first: the user's init containers may read the model.
        self.ops.extend(
            {"op": "add", "path": json_pointer("spec", "initContainers", i), "value": c}
            for i, c in enumerate(new)
        )

    # container edits

    def mounts(self, index: int, wanted: list[tuple[dict[str, Any], str]]) -> None:
        """Add (mount, hint) pairs to containers[index]; a different mount at the same path is an error."""
        container = self.containers[index]
        by_path = {m.get("mountPath", "").rstrip("/"): m for m in container.get("volumeMounts") or []}
        new: list[dict[str, Any]] = []
        for mount, hint in wanted:
            current = by_path.get(mount["mountPath"].rstrip("/"))
            if current == mount:
                continue
            if current is not None:
                self.errors.append(
                    f'container "{container.get("name")}" already mounts volume '
                    f'"{current.get("name")}" at {mount["mountPath"]}; {hint}'
                )
                continue
            by_path[mount["mountPath"].rstrip("/")] = mount
            new.append(mount)
        if not new:
            return
        if "volumeMounts" in container:
            self.ops.extend(
                {
                    "op": "add",
                    "path": json_pointer("spec", "containers", index, "volumeMounts", "-"),
                    "value": m,
                }
                for m in new
            )
        else:
            self.ops.append(
                {"op": "add", "path": json_pointer("spec", "containers", index, "volumeMounts"), "value": new}
            )

    def env(self, index: int, wanted: list[tuple[str, str]]) -> None:
        container = self.containers[index]
        present = {e.get("name") for e in container.get("env") or []}
        new = [{"name": k, "value": v} for k, v in wanted if k not in present]
        if not new:
            return
        if container.get("envFrom"):
            names = ", ".join(e["name"] for e in new)
            self.warnings.append(
                f'container "{container.get("name")}" uses envFrom; the injected {names} take '
                "precedence over keys of the same name there"
            )
        if "env" in container:
            # Prepended, so the user's own env entries can refer to $(MODEL_DIR).
            self.ops.extend(
                {"op": "add", "path": json_pointer("spec", "containers", index, "env", i), "value": e}
                for i, e in enumerate(new)
            )
        else:
            self.ops.append(
                {"op": "add", "path": json_pointer("spec", "containers", index, "env"), "value": new}
            )

    def poststart(self, index: int, ours: list[str], disable_hint: str) -> None:
        container = self.containers[index]
        path: tuple[str | int, ...] = ("spec", "containers", index, "lifecycle")
        lifecycle = container.get("lifecycle")
        if lifecycle is None:
            self.ops.append(
                {
                    "op": "add",
                    "path": json_pointer(*path),
                    "value": {"postStart": {"exec": {"command": ours}}},
                }
            )
            return
        hook = lifecycle.get("postStart")
        if hook is None:
            self.ops.append(
                {"op": "add", "path": json_pointer(*path, "postStart"), "value": {"exec": {"command": ours}}}
            )
            return
        if "exec" not in hook:
            kind = next((k for k in ("httpGet", "tcpSocket", "sleep") if k in hook), "non-exec")
            self.errors.append(
                f'container "{container.get("name")}" already has a {kind} postStart hook, which '
                f"cannot be chained with the prewarm hook; {disable_hint}"
            )
            return
        user_argv = list(hook["exec"].get("command") or [])
        if user_argv == ours or user_argv[:4] == chain_poststart(ours, []):
            return
        self.ops.append(
            {
                "op": "add",
                "path": json_pointer(*path, "postStart", "exec", "command"),
                "value": chain_poststart(ours, user_argv),
            }
        )

    def annotations(self, values: dict[str, str]) -> None:
        # The caches annotation got us here, so metadata.annotations exists.
        current = self.pod["metadata"]["annotations"]
        self.ops.extend(
            {"op": "add", "path": json_pointer("metadata", "annotations", k), "value": v}
            for k, v in values.items()
            if current.get(k) != v
        )


def _security_context(settings: InjectionSettings) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _mirror_cpu_memory(container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    resources = container.get("resources") or {}
    mirrored: dict[str, dict[str, Any]] = {}
    for kind in ("requests", "limits"):
        values = {k: v for k, v in (resources.get(kind) or {}).items() if k in ("cpu", "memory")}
        if values:
            mirrored[kind] = values
    return mirrored


def _cache_mount(pin: _Pin) -> dict[str, Any]:
    return {"name": pin.volume, "mountPath": pin.mount_path, "readOnly": True, "subPath": pin.revision}


def _already_injected(pod: Mapping[str, Any], annotations: Mapping[str, str]) -> bool:
    if annotations.get(ANN_INJECTED) != "true":
        return False
    try:
        pinned = json.loads(annotations.get(ANN_PINNED, ""))
    except ValueError:
        return False
    if not isinstance(pinned, dict) or not pinned:
        return False
    spec = pod.get("spec") or {}
    pvc_volumes = {v.get("name") for v in spec.get("volumes") or [] if "persistentVolumeClaim" in v}
    mounted = {
        m.get("subPath")
        for c in spec.get("containers") or []
        for m in c.get("volumeMounts") or []
        if m.get("name") in pvc_volumes
    }
    return all(rev in mounted for rev in pinned.values())


def _memory_warnings(
    container: Mapping[str, Any], prewarmed: list[_Pin], settings: InjectionSettings
) -> list[str]:
    name = container.get("name")
    sizes = [s for s in (p.size_bytes() for p in prewarmed) if s is not None]
    caches = ", ".join(p.name for p in prewarmed)
    limit_text = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if not sizes:
        if limit_text is None:
            return [
                f'container "{name}" has no memory limit while prewarm is on for {caches}; set '
                "resources.limits.memory above model size + server overhead + slack"
            ]
        return []
    size = sum(sizes)
    overhead = max(settings.memory_overhead_min_bytes, int(size * settings.memory_overhead_fraction))
    needed = size + overhead
    if limit_text is None:
        return [
            f'container "{name}" has no memory limit while prewarm loads {human_bytes(size)} of {caches} '
            f"into the page cache; set resources.limits.memory to at least {human_bytes(needed)} "
            f"(model + {human_bytes(overhead)} overhead) plus what the server itself needs"
        ]
    limit = parse_quantity(limit_text)
    if limit is None or limit >= needed:
        return []
    return [
        f'container "{name}" memory limit {limit_text} ({human_bytes(limit)}) is below the prewarmed model '
        f"size {human_bytes(size)} ({caches}) + {human_bytes(overhead)} overhead = {human_bytes(needed)}; "
        "the warmed page cache will be reclaimed. Raise resources.limits.memory or set "
        "spec.prewarm.mode: off"
    ]


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
    names = _split_names(annotations.get(ANN_CACHES, ""))
    if not names:
        return _allow(
            [
                f"pod has label {LABEL_INJECT}=true but no ModelCache names in annotation {ANN_CACHES}; "
                "nothing injected"
            ]
        )
    if _already_injected(pod, annotations):
        return _allow()

    namespace = namespace or metadata.get("namespace") or ""
    mutation = _Mutation(pod, settings)
    errors, warnings = mutation.errors, mutation.warnings

    override = annotations.get(ANN_NOT_READY_POLICY)
    if override is not None and override not in NOT_READY_POLICIES:
        errors.append(
            f"annotation {ANN_NOT_READY_POLICY} is {override!r}; use one of " + ", ".join(NOT_READY_POLICIES)
        )
    prewarm_value = annotations.get(ANN_PREWARM, "on")
    if prewarm_value not in PREWARM_VALUES:
        errors.append(f"annotation {ANN_PREWARM} is {prewarm_value!r}; use off or on")
    pod_prewarm_off = prewarm_value == "off"

    targets = _target_containers(mutation.containers, annotations.get(ANN_CONTAINERS), errors)
    if errors:
        return _deny(errors, warnings)

    pins: list[_Pin] = []
    for name in names:
        resolution = _resolve(name, caches.get(name), override, namespace)
        if resolution.error:
            errors.append(resolution.error)
        if resolution.warning:
            warnings.append(resolution.warning)
        if resolution.pin:
            pins.append(resolution.pin)
    if errors:
        return _deny(errors, warnings)
    if not pins:
        return _allow(warnings)

    seen_paths: dict[str, str] = {}
    for pin in pins:
        other = seen_paths.setdefault(pin.mount_path.rstrip("/"), pin.name)
        if other != pin.name:
            errors.append(
                f'ModelCaches "{other}" and "{pin.name}" both mount at {pin.mount_path}; set '
                "spec.serving.mountPath on one of them"
            )
    if errors:
        return _deny(errors, warnings)
    pins = [
        replace(
            p,
            volume=mutation.volume(
                f"mc-{p.name}", {"persistentVolumeClaim": {"claimName": p.pvc_name, "readOnly": True}}
            ),
        )
        for p in pins
    ]

    if not targets:
        pod_prewarm_off = True  # nothing would read what is warmed
        warnings.extend(
            f'ModelCache "{p.name}" has prewarm mode {p.spec.prewarm.mode} but no container in '
            f"this pod receives it ({ANN_CONTAINERS} lists none); nothing is warmed"
            for p in pins
            if p.spec.prewarm.mode != "off"
        )
    post = [p for p in pins if p.prewarm_mode(pod_prewarm_off) == "postStart"]
    warm_init = [p for p in pins if p.prewarm_mode(pod_prewarm_off) == "initContainer"]
    waits = [p for p in pins if p.wait]
    s = settings

    tools = ""
    if post or warm_init or waits:
        tools = mutation.volume(TOOLS_VOLUME, {"emptyDir": {"sizeLimit": _SMALL_EMPTYDIR}})
    log = mutation.volume(LOG_VOLUME, {"emptyDir": {"sizeLimit": _SMALL_EMPTYDIR}}) if post else ""
    mutation.flush_volumes()

    def init(
        name: str, command: list[str], mounts: list[dict[str, Any]], resources: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": name,
            "image": s.operator_image,
            "imagePullPolicy": s.image_pull_policy,
            "command": command,
            "volumeMounts": mounts,
        }
        if resources:
            container["resources"] = resources
        container["securityContext"] = _security_context(s)
        return container

    tools_ro = {"name": tools, "mountPath": s.tools_dir, "readOnly": True}
    inits: list[dict[str, Any]] = []
    if tools:
        inits.append(
            init(
                TOOLS_INIT,
                s.install_command(tools_dir=s.tools_dir),
                [{"name": tools, "mountPath": s.tools_dir}],
                _TINY_RESOURCES,
            )
        )
    inits.extend(
        init(
            _dns_label(WAIT_INIT_PREFIX + p.name),
            s.wait_command(
                tools_dir=s.tools_dir,
                model_dir=f"{p.mount_path.rstrip('/')}/{p.revision}",
                timeout_seconds=p.spec.download.activeDeadlineSeconds,
            ),
            [{"name": p.volume, "mountPath": p.mount_path, "readOnly": True}, tools_ro],
            _TINY_RESOURCES,
        )
        for p in waits
    )
    if warm_init:
        inits.append(
            init(
                PREWARM_INIT,
                s.warm_command(
                    tools_dir=s.tools_dir,
                    model_dirs=[p.mount_path for p in warm_init],
                    concurrency=max(p.spec.prewarm.concurrency for p in warm_init),
                    timeout_seconds=max(p.spec.prewarm.timeoutSeconds for p in warm_init),
                ),
                [*(_cache_mount(p) for p in warm_init), tools_ro],
                _mirror_cpu_memory(mutation.containers[targets[0]]),
            )
        )
    mutation.init_containers(inits)

    env: list[tuple[str, str]] = []
    if pins[0].name == names[0]:
        env.append(("MODEL_DIR", pins[0].mount_path))
    else:
        warnings.append(f'primary ModelCache "{names[0]}" is not injected, so MODEL_DIR is not set')
    for p in pins:
        if any(name == env_name(p.name) for name, _ in env):
            warnings.append(
                f'{env_name(p.name)} already names another ModelCache, so it is not set for "{p.name}"'
            )
        else:
            env.append((env_name(p.name), p.mount_path))
    if any(p.spec.source.huggingface for p in pins):
        env.extend(HF_ENV)

    prewarmed = [*post, *warm_init]
    disable_hint = (
        f"set spec.prewarm.mode: initContainer on ModelCache {', '.join(p.name for p in post)} or "
        f'annotate the pod {ANN_PREWARM}: "off"'
    )
    for index in targets:
        container = mutation.containers[index]
        mounts = [
            (_cache_mount(p), f'set spec.serving.mountPath on ModelCache "{p.name}" or remove that mount')
            for p in pins
        ]
        if post:
            mounts.append((tools_ro, "remove that mount or change the operator's tools directory"))
            mounts.append(
                (
                    {"name": log, "mountPath": s.log_dir},
                    "remove that mount or change the operator's prewarm log directory",
                )
            )
        mutation.mounts(index, mounts)
        mutation.env(index, env)
        if post:
            ours = s.poststart_command(
                tools_dir=s.tools_dir,
                model_dirs=[p.mount_path for p in post],
                concurrency=max(p.spec.prewarm.concurrency for p in post),
                timeout_seconds=max(p.spec.prewarm.timeoutSeconds for p in post),
                log_file=f"{s.log_dir}/prewarm-{container.get('name')}.log",
            )
            mutation.poststart(index, ours, disable_hint)
        if prewarmed:
            warnings.extend(_memory_warnings(container, prewarmed, s))
        warnings.extend(
            f'container "{container.get("name")}" runs with {text}, which {flag.why}'
            for flag, text in engine_flag_hits(container, prewarm_on=bool(prewarmed))
        )

    mutation.annotations(
        {ANN_PINNED: json.dumps({p.name: p.revision for p in pins}, sort_keys=True), ANN_INJECTED: "true"}
    )
    if errors:
        return _deny(errors, warnings)
    # Deep copy: shared dicts (mounts, resources) must not alias inside the patched pod.
    return AdmissionDecision(allowed=True, patch=copy.deepcopy(mutation.ops), warnings=warnings)


def _target_containers(
    containers: Sequence[Mapping[str, Any]], annotation: str | None, errors: list[str]
) -> list[int]:
    """Indexes of the containers that get mounts, env and the hook."""
    if annotation is not None:
        index = {c.get("name"): i for i, c in enumerate(containers)}
        wanted = _split_names(annotation)
        unknown = [n for n in wanted if n not in index]
        if unknown:
            errors.append(
                f"annotation {ANN_CONTAINERS} names {', '.join(unknown)}, which the pod does not have "
                f"(containers: {', '.join(str(c.get('name')) for c in containers)})"
            )
            return []
        return [index[n] for n in wanted]
    gpu = [i for i, c in enumerate(containers) if _requests_gpu(c)]
    return gpu or ([0] if containers else [])
