"""What the webhook adds to a pod beside the target containers' edits: the operator's settings for it, the
names of our volumes and init containers, and the plan of one pod (which cache is prewarmed how, which
waits) with the init containers built from it. Used by patch.py; see its docstring for the decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .commands import (
    InstallCommand,
    PoststartCommand,
    WaitCommand,
    WarmCommand,
    default_install_command,
    default_poststart_command,
    default_wait_command,
    default_warm_command,
)
from .compile_cache import CompilePlan
from .engines import StoreLookup, no_stores
from .memory import GIB
from .pinning import Pin
from .pod_shape import SMALL_EMPTYDIR, TINY_RESOURCES, PodMutation, dns_label, mirror_cpu_memory, security_context

TOOLS_VOLUME = "modelcache-tools"
LOG_VOLUME = "modelcache-prewarm-log"
TOOLS_INIT = "modelcache-tools"
PREWARM_INIT = "modelcache-prewarm"
WAIT_INIT_PREFIX = "modelcache-wait-"


@dataclass(frozen=True)
class InjectionSettings:
    operator_image: str
    tools_dir: str = "/opt/modelcache"
    compile_dir: str = "/var/cache/modelcache-compile"  # the pod's compile-cache folder, writable
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
    # ModelStore name -> spec, for the filesystem under each cache (engines.container_policy).
    store_lookup: StoreLookup = no_stores


@dataclass(frozen=True)
class InjectionPlan:
    """The pins of one pod, split by what each needs, and the names of our shared volumes."""

    pins: list[Pin]
    post: list[Pin]  # prewarmed by the postStart hook
    warm_init: list[Pin]  # prewarmed by the init container
    waits: list[Pin]
    tools: str  # volume names, "" when not needed
    log: str
    settings: InjectionSettings
    compile: CompilePlan | None = None

    def tools_mount(self) -> dict[str, Any]:
        return {"name": self.tools, "mountPath": self.settings.tools_dir, "readOnly": True}

    def init(
        self, name: str, command: list[str], mounts: list[dict[str, Any]], resources: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        s = self.settings
        container: dict[str, Any] = {
            "name": name,
            "image": s.operator_image,
            "imagePullPolicy": s.image_pull_policy,
            "command": command,
            "volumeMounts": mounts,
        }
        if resources:
            container["resources"] = resources
        container["securityContext"] = security_context(s.run_as_user)
        return container


def plan_injection(pins: list[Pin], pod_prewarm_off: bool, mutation: PodMutation, settings: InjectionSettings,
          compile_plan: CompilePlan | None) -> InjectionPlan:
    post = [p for p in pins if p.prewarm_mode(pod_prewarm_off) == "postStart"]
    warm_init = [p for p in pins if p.prewarm_mode(pod_prewarm_off) == "initContainer"]
    waits = [p for p in pins if p.wait]
    tools = ""
    if post or warm_init or waits:
        tools = mutation.volume(TOOLS_VOLUME, {"emptyDir": {"sizeLimit": SMALL_EMPTYDIR}})
    log = mutation.volume(LOG_VOLUME, {"emptyDir": {"sizeLimit": SMALL_EMPTYDIR}}) if post else ""
    mutation.flush_volumes()
    return InjectionPlan(pins, post, warm_init, waits, tools, log, settings, compile_plan)


def init_containers(plan: InjectionPlan, mutation: PodMutation, targets: list[int]) -> list[dict[str, Any]]:
    """Ours, in order: tools, one wait per waiting cache, the initContainer-mode prewarm, the compile
    cache's folder."""
    s = plan.settings
    inits: list[dict[str, Any]] = []
    if plan.tools:
        install = s.install_command(tools_dir=s.tools_dir)
        inits.append(plan.init(TOOLS_INIT, install, [{"name": plan.tools, "mountPath": s.tools_dir}], TINY_RESOURCES))
    for p in plan.waits:
        wait = s.wait_command(
            tools_dir=s.tools_dir, model_dir=p.wait_dir(), timeout_seconds=p.spec.download.activeDeadlineSeconds
        )
        # The whole volume, no subPath: the revision folder may not exist yet.
        mounts = [{"name": p.volume, "mountPath": p.mount_path, "readOnly": True}, plan.tools_mount()]
        inits.append(plan.init(dns_label(WAIT_INIT_PREFIX + p.name), wait, mounts, TINY_RESOURCES))
    if plan.warm_init:
        warm = s.warm_command(
            tools_dir=s.tools_dir,
            model_dirs=[p.mount_path for p in plan.warm_init],
            concurrency=max(p.spec.prewarm.concurrency for p in plan.warm_init),
            timeout_seconds=max(p.spec.prewarm.timeoutSeconds for p in plan.warm_init),
        )
        mounts = [*(p.mount() for p in plan.warm_init), plan.tools_mount()]
        # Without a target container there is no prewarm (see mutate_pod), so targets[0] exists here.
        inits.append(plan.init(PREWARM_INIT, warm, mounts, mirror_cpu_memory(mutation.containers[targets[0]])))
    if plan.compile:
        inits.append(plan.compile.init_container(s.operator_image, s.image_pull_policy, s.run_as_user))
    return inits
