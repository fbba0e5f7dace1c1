"""The compile-cache part of admission: one writable folder of the namespace's compile claim per pod, keyed
by the GPU product its node selection pins and by its engine image (layout and key in
builders/compile_cache.py). Pure, like the rest of the webhook.

A pod gets it when a pinned cache's status names a compile claim (its store has spec.compileCache
enabled), a target container runs vLLM or SGLang with a versioned image, the pod pins one GPU product or
family, and it is not annotated ``modelcache.dev/compile-cache: "off"``. Anything else that stops it is
a warning, never a denial: the pod serves the same, it just compiles again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api.names import ANN_COMPILE_CACHE, ANN_ENGINE
from ..builders import compile_cache as layout
from ..builders.quantity import parse_quantity
from .pinning import Pin
from .pod_shape import TINY_RESOURCES, PodMutation, security_context

COMPILE_VOLUME = "mc-compile-cache"
COMPILE_INIT = "modelcache-compile-cache"
ROOT_MOUNT = "/modelcache-compile"  # the whole claim, in the init container only


@dataclass(frozen=True)
class CompilePlan:
    volume: str
    key: str  # "<gpu>/<engine>-<version>": the serving mounts' subPath
    engine: str
    limit_bytes: int
    root_owned: bool

    def init_container(self, image: str, pull_policy: str, run_as_user: int) -> dict[str, Any]:
        command = ["modelcache-operator", "compile-cache", "--root", ROOT_MOUNT, "--key", self.key,
                   "--limit-bytes", str(self.limit_bytes)]
        for _, sub in layout.ENGINE_ENV[self.engine]:
            command += ["--subdir", sub]
        context = security_context(run_as_user)
        if self.root_owned:
            # The owner of the kubelet-created folder, with no capability: it can write there and nowhere else.
            context |= {"runAsUser": 0, "runAsNonRoot": False}
        return {"name": COMPILE_INIT, "image": image, "imagePullPolicy": pull_policy, "command": command,
                "volumeMounts": [{"name": self.volume, "mountPath": ROOT_MOUNT}], "resources": TINY_RESOURCES,
                "securityContext": context}

    def mount(self, mount_path: str) -> dict[str, Any]:
        return {"name": self.volume, "mountPath": mount_path, "subPath": self.key}


def plan_compile_cache(pins: list[Pin], mutation: PodMutation, targets: list[int],
                       annotations: Mapping[str, str]) -> CompilePlan | None:
    """The pod's compile folder, its volume registered on the mutation; None (with a warning when the pod
    could have had one) otherwise."""
    pin = next((p for p in pins if p.status.compileCache), None)
    if pin is None or pin.status.compileCache is None or not targets:
        return None
    if annotations.get(ANN_COMPILE_CACHE) == "off":
        return None
    claim = pin.status.compileCache
    image = str(mutation.containers[targets[0]].get("image") or "")
    declared = annotations.get(ANN_ENGINE)
    engine = layout.declared_engine(declared) if declared is not None else layout.engine_of(image)
    if declared is not None and engine is None:
        mutation.errors.append(f"annotation {ANN_ENGINE} is {declared!r}; use vllm:<version> or sglang:<version>")
        return None
    if engine is None:
        mutation.warnings.append(
            f'ModelCache "{pin.name}"\'s store has a compile cache, but image {image!r} is not a versioned vLLM or '
            f"SGLang image (a tag other than latest, or a digest) and the pod has no {ANN_ENGINE} annotation, "
            "so no compile cache is mounted")
        return None
    gpu = layout.gpu_key(mutation.spec)
    if gpu is None:
        mutation.warnings.append(
            f'ModelCache "{pin.name}"\'s store has a compile cache, but the pod may run on more than one GPU '
            f"product: pin one with nodeSelector {layout.GPU_LABELS[0]} (or {layout.GPU_LABELS[1]}) to share "
            "compiled kernels with pods on the same GPUs; no compile cache is mounted")
        return None
    limit = parse_quantity(claim.sizeLimit) or 0
    volume = mutation.volume(COMPILE_VOLUME, {"persistentVolumeClaim": {"claimName": claim.pvcName}})
    return CompilePlan(volume, layout.key_folder(gpu[1], engine), engine.name, limit, claim.rootOwned)
