"""What the webhook puts into each target container of a pod: the cache mounts, the MODEL_DIR env, the
postStart prewarm hook, and the memory and engine warnings about it. Used by patch.py; see its docstring
for the decisions."""

from __future__ import annotations

import re

from ..api.names import ANN_PREWARM
from ..builders.compile_cache import engine_env as compile_env
from .engines import container_policy, engine_warnings
from .injection import InjectionPlan
from .memory import memory_warnings
from .pinning import Pin
from .pod_shape import PodMutation

HF_ENV = (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"))


def env_name(cache: str) -> str:
    return "MODEL_DIR_" + re.sub(r"[^A-Z0-9]", "_", cache.upper())


def cache_env(names: list[str], pins: list[Pin], warnings: list[str]) -> list[tuple[str, str]]:
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
    return env


def edit_target(plan: InjectionPlan, mutation: PodMutation, index: int, env: list[tuple[str, str]]) -> str | None:
    """Mounts, env, the postStart hook and the warnings of one target container; returns why the hook was
    skipped for it (its engine reads the cache itself), if it was."""
    s = plan.settings
    container = mutation.containers[index]
    policy = container_policy(container, [*plan.post, *plan.warm_init], s.store_lookup, hook_on=bool(plan.post))
    mutation.warnings.extend(policy.warnings)
    mounts = [
        (p.mount(), f'set spec.serving.mountPath on ModelCache "{p.name}" or remove that mount') for p in plan.pins
    ]
    if plan.post:
        mounts.append((plan.tools_mount(), "remove that mount or change the operator's tools directory"))
        log_mount = {"name": plan.log, "mountPath": s.log_dir}
        mounts.append((log_mount, "remove that mount or change the operator's prewarm log directory"))
    if plan.compile:
        hint = "remove that mount or change the operator's compile-cache directory"
        mounts.append((plan.compile.mount(s.compile_dir), hint))
        env = [*env, *compile_env(plan.compile.engine, s.compile_dir)]
    mutation.mounts(index, mounts)
    mutation.env(index, env)
    if plan.post and policy.skip_reason is None:
        ours = s.poststart_command(
            tools_dir=s.tools_dir,
            model_dirs=[p.mount_path for p in plan.post],
            concurrency=max(p.spec.prewarm.concurrency for p in plan.post),
            timeout_seconds=max(p.spec.prewarm.timeoutSeconds for p in plan.post),
            log_file=f"{s.log_dir}/prewarm-{container.get('name')}.log",
        )
        disable_hint = (
            f"set spec.prewarm.mode: initContainer on ModelCache {', '.join(p.name for p in plan.post)} or "
            f'annotate the pod {ANN_PREWARM}: "off"'
        )
        mutation.poststart(index, ours, disable_hint)
    prewarmed = [*plan.post, *plan.warm_init]
    if prewarmed:
        sizes = [(p.name, p.size_bytes()) for p in prewarmed]
        mutation.warnings.extend(
            memory_warnings(container, sizes, s.memory_overhead_min_bytes, s.memory_overhead_fraction)
        )
    mutation.warnings.extend(engine_warnings(container, prewarm_on=bool(prewarmed)))
    return policy.skip_reason
