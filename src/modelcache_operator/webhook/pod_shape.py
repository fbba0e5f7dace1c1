"""The pod side of admission: RFC 6902 ops against one pod, and the pod-spec pieces injection adds.

`PodMutation` knows pod structure only (volumes, init containers, mounts, env, lifecycle, annotations),
never ModelCaches; `target_containers` picks the containers that get the model. Every edit is idempotent
on its own: identical volumes, mounts, init containers and hooks are reused, so partial re-admissions add
nothing twice.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from ..api.names import ANN_CONTAINERS

# $0 of the chained postStart shell; also how a chained hook is recognised.
CHAIN_ARGV0 = "modelcache-poststart"
SMALL_EMPTYDIR = "16Mi"
# requests == limits: keeps a Guaranteed pod Guaranteed.
TINY_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "50m", "memory": "64Mi"},
}


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def json_pointer(*parts: str | int) -> str:
    return "".join("/" + _escape(str(p)) for p in parts)


def dns_label(base: str, suffix: str = "") -> str:
    """A valid DNS label (volume and container names): '.' becomes '-', long names end in a hash."""
    base = re.sub(r"[^a-z0-9-]", "-", base.lower())
    limit = 63 - len(suffix)
    if len(base) > limit:
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        base = base[: limit - 9].rstrip("-") + "-" + digest
    return base + suffix


def chain_poststart(ours: list[str], user_argv: list[str]) -> list[str]:
    """Run our hook, then exec the user's exec hook with its argv as positional parameters, untouched."""
    return ["/bin/sh", "-c", f'{shlex.join(ours)}; exec "$@"', CHAIN_ARGV0, *user_argv]


def security_context(run_as_user: int) -> dict[str, Any]:
    """Restricted Pod Security for our init containers."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def mirror_cpu_memory(container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's cpu and memory requests and limits, never its GPUs or other resources."""
    resources = container.get("resources") or {}
    mirrored: dict[str, dict[str, Any]] = {}
    for kind in ("requests", "limits"):
        values = {k: v for k, v in (resources.get(kind) or {}).items() if k in ("cpu", "memory")}
        if values:
            mirrored[kind] = values
    return mirrored


def requests_gpu(container: Mapping[str, Any]) -> bool:
    resources = container.get("resources") or {}
    return any(
        str(key).endswith("/gpu") for kind in ("limits", "requests") for key in resources.get(kind) or {}
    )


def split_names(value: str) -> list[str]:
    """A comma-separated annotation value: stripped, empty entries and repeats dropped, order kept."""
    return list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))


def target_containers(
    containers: Sequence[Mapping[str, Any]], annotation: str | None, errors: list[str]
) -> list[int]:
    """Indexes of the containers that get mounts, env and the hook: those the annotation names, else those
    requesting any */gpu resource, else the first."""
    if annotation is not None:
        index = {c.get("name"): i for i, c in enumerate(containers)}
        wanted = split_names(annotation)
        unknown = [n for n in wanted if n not in index]
        if unknown:
            errors.append(
                f"annotation {ANN_CONTAINERS} names {', '.join(unknown)}, which the pod does not have "
                f"(containers: {', '.join(str(c.get('name')) for c in containers)})"
            )
            return []
        return [index[n] for n in wanted]
    gpu = [i for i, c in enumerate(containers) if requests_gpu(c)]
    return gpu or ([0] if containers else [])


class PodMutation:
    """Accumulates JSON Patch ops, warnings and errors against one pod, which it never modifies."""

    def __init__(self, pod: Mapping[str, Any]) -> None:
        self.pod = pod
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
            name = dns_label(base, "" if n == 1 else f"-{n}")
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
            path = json_pointer("spec", "containers", index, "volumeMounts", "-")
            self.ops.extend({"op": "add", "path": path, "value": m} for m in new)
        else:
            path = json_pointer("spec", "containers", index, "volumeMounts")
            self.ops.append({"op": "add", "path": path, "value": new})

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
            whole: dict[str, Any] = {"postStart": {"exec": {"command": ours}}}
            self.ops.append({"op": "add", "path": json_pointer(*path), "value": whole})
            return
        hook = lifecycle.get("postStart")
        if hook is None:
            value = {"exec": {"command": ours}}
            self.ops.append({"op": "add", "path": json_pointer(*path, "postStart"), "value": value})
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

    def scheduling_gates(self, names: list[str]) -> None:
        """Add the named scheduling gates the pod does not have yet, after any of its own."""
        present = {g.get("name") for g in self.spec.get("schedulingGates") or []}
        new = [{"name": n} for n in names if n not in present]
        if not new:
            return
        if "schedulingGates" in self.spec:
            self.ops.extend({"op": "add", "path": "/spec/schedulingGates/-", "value": g} for g in new)
        else:
            self.ops.append({"op": "add", "path": "/spec/schedulingGates", "value": new})

    def annotations(self, values: dict[str, str]) -> None:
        # The caches annotation got us here, so metadata.annotations exists.
        current = self.pod["metadata"]["annotations"]
        self.ops.extend(
            {"op": "add", "path": json_pointer("metadata", "annotations", k), "value": v}
            for k, v in values.items()
            if current.get(k) != v
        )
