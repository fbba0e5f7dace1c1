"""Unit tests for the pure pod-to-patch function `mutate_pod` and the helpers it is built from.

Every allowed decision is applied with the `jsonpatch` library and the resulting pod is checked, so the
ops are proven to apply (right `add` paths, escaping, list handling), not just to look right.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from modelcache_operator.api.names import (
    ANN_CACHES,
    ANN_CONTAINERS,
    ANN_DOWNLOADS,
    ANN_FOLDERS,
    ANN_INJECTED,
    ANN_NOT_READY_POLICY,
    ANN_PINNED,
    ANN_PREWARM,
    LABEL_INJECT,
)
from modelcache_operator.api.v1alpha2 import ModelCacheSpec, ModelCacheStatus
from modelcache_operator.builders.pins import pinned_downloads
from modelcache_operator.builders.quantity import parse_quantity
from modelcache_operator.prewarm import hook
from modelcache_operator.webhook.engines import engine_flag_hits
from modelcache_operator.webhook.injection import InjectionSettings
from modelcache_operator.webhook.memory import human_bytes
from modelcache_operator.webhook.patch import AdmissionDecision, mutate_pod
from modelcache_operator.webhook.pinning import CacheView
from modelcache_operator.webhook.pod_shape import CHAIN_ARGV0, chain_poststart, json_pointer

GIB = 1 << 30
SHA_A = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
SHA_B = "fedcba9876543210fedcba9876543210fedcba98"
SHA_C = "1111111111222222222233333333334444444444"
IMAGE = "ghcr.io/example/modelcache-operator:0.1.0"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


# ----- fake command builders (the prewarm contract), so expectations are exact -----


def fake_poststart(
    tools_dir: str, model_dirs: list[str], concurrency: int, timeout_seconds: int, log_file: str
) -> list[str]:
    return [
        "fake-poststart",
        tools_dir,
        f"--concurrency={concurrency}",
        f"--timeout={timeout_seconds}",
        f"--log={log_file}",
        *model_dirs,
    ]


def fake_wait(tools_dir: str, model_dir: str, timeout_seconds: int) -> list[str]:
    return ["fake-wait", tools_dir, model_dir, str(timeout_seconds)]


def fake_install(tools_dir: str) -> list[str]:
    return ["fake-install", tools_dir]


SETTINGS = InjectionSettings(
    operator_image=IMAGE,
    poststart_command=fake_poststart,
    wait_command=fake_wait,
    install_command=fake_install,
)


# ----- ModelCache views -----


def spec(
    repo: str = "deepseek-ai/DeepSeek-R1-0528",
    *,
    revision: str = "main",
    modelscope: bool = False,
    prewarm: dict[str, Any] | None = None,
    serving: dict[str, Any] | None = None,
) -> ModelCacheSpec:
    source = (
        {"modelscope": {"model": repo, "revision": revision}}
        if modelscope
        else {"huggingface": {"repo": repo, "revision": revision}}
    )
    return ModelCacheSpec.model_validate(
        {
            "source": source,
            "prewarm": prewarm or {},
            "serving": serving or {},
        }
    )


def folder(sha: str) -> str:
    """Where the operator puts a revision inside a cache's claim (all files, no filter)."""
    return f"all/{sha}"


def download_ref(sha: str) -> dict[str, Any]:
    """The ModelDownload of a revision: shared ones live in the operator's namespace."""
    return {"namespace": "modelcache-system", "name": f"dl-{sha[:8]}", "shared": True, "requestedBy": "llm/x"}


def ready(
    name: str,
    sha: str = SHA_A,
    *,
    size: int = 640 * GIB,
    pvc: str | None = None,
    path: str | None = None,
    **spec_kw: Any,
) -> CacheView:
    status = ModelCacheStatus.model_validate(
        {
            "phase": "Ready",
            "resolvedRevision": sha,
            "revisionPath": path or folder(sha),
            "pvcName": pvc or f"mc-{name}",
            "sizeBytes": size,
            "servedFrom": download_ref(sha),
            "downloadRef": download_ref(sha),
        }
    )
    return CacheView(name=name, spec=spec(**spec_kw), status=status)


AUTO = "auto"


def downloading(
    name: str,
    *,
    resolved: str | None = SHA_B,
    requested: str | None = "main",
    pvc: str | None = "pvc-x",
    phase: str = "Downloading",
    pending: str | None = AUTO,
    published: str | None = None,
    **spec_kw: Any,
) -> CacheView:
    """A cache downloading `resolved` into `pending` (folder(resolved) by default); `published` is the
    revision it served before, if any. Its policy is wait unless `serving` says otherwise: these tests cover
    the wait container, and gate (the default since v1alpha2's gates) has its own in test_gates.py."""
    spec_kw.setdefault("serving", {"notReadyPolicy": "wait"})
    if pending == AUTO:
        pending = folder(resolved) if resolved else None
    status = ModelCacheStatus.model_validate(
        {
            "phase": phase,
            "pvcName": pvc,
            "pendingRevisionPath": pending,
            "resolvedRevision": published,
            "revisionPath": folder(published) if published else None,
            "servedFrom": download_ref(published) if published else None,
            "downloadRef": download_ref(resolved or "pending0"),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "DownloadInProgress",
                    "message": "3/17 files",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "download": {
                "jobName": f"{name}-dl",
                "state": "Downloading",
                "requestedRevision": requested,
                "resolvedRevision": resolved,
                "bytesTotal": 20 * GIB,
                "bytesDone": GIB,
            },
        }
    )
    return CacheView(name=name, spec=spec(**spec_kw), status=status)


# ----- realistic pods -----

KUBE_API_VOLUME = {
    "name": "kube-api-access-7x2kq",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        ],
    },
}
KUBE_API_MOUNT = {
    "name": "kube-api-access-7x2kq",
    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    "readOnly": True,
}


def statefulset_pod(caches: str = "deepseek-r1", **annotations: str) -> dict[str, Any]:
    """The seed's SGLang StatefulSet pod as the apiserver hands it to the webhook."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "sglang-0",
            "namespace": "llm",
            "labels": {
                "app": "sglang",
                "controller-revision-hash": "sglang-5d8f7c9b4",
                "statefulset.kubernetes.io/pod-name": "sglang-0",
                LABEL_INJECT: "true",
            },
            "annotations": {ANN_CACHES: caches, **annotations},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": "sglang",
                    "uid": "8c1e0a3e-0000-4000-8000-000000000001",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "hostname": "sglang-0",
            "subdomain": "sglang",
            "serviceAccountName": "default",
            "restartPolicy": "Always",
            "volumes": [
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "15Gi"}},
                KUBE_API_VOLUME,
            ],
            "containers": [
                {
                    "name": "sglang",
                    "image": "lmsysorg/sglang:v0.5.5-cu128",
                    "command": [
                        "sh",
                        "-c",
                        'python3 -m sglang.launch_server --model-path "$MODEL_DIR" --tp 8',
                    ],
                    "ports": [{"containerPort": 8000, "name": "http", "protocol": "TCP"}],
                    "resources": {
                        "limits": {"nvidia.com/gpu": "8", "memory": "800Gi", "cpu": "64"},
                        "requests": {"nvidia.com/gpu": "8", "memory": "800Gi", "cpu": "64"},
                    },
                    "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, KUBE_API_MOUNT],
                    "terminationMessagePath": "/dev/termination-log",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
        },
    }


def deployment_pod(caches: str = "qwen3-coder", **annotations: str) -> dict[str, Any]:
    """A ReplicaSet-created pod: generateName, no namespace in the object, a GPU container, a sidecar and
    a user init container."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "vllm-7d9f8b6c5d-",
            "labels": {"app": "vllm", "pod-template-hash": "7d9f8b6c5d", LABEL_INJECT: "true"},
            "annotations": {ANN_CACHES: caches, "prometheus.io/scrape": "true", **annotations},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "vllm-7d9f8b6c5d",
                    "uid": "8c1e0a3e-0000-4000-8000-000000000002",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "volumes": [KUBE_API_VOLUME],
            "initContainers": [
                {
                    "name": "fetch-lora",
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", 'ls "$MODEL_DIR"'],
                    "volumeMounts": [KUBE_API_MOUNT],
                }
            ],
            "containers": [
                {
                    "name": "vllm",
                    "image": "vllm/vllm-openai:v0.11.0",
                    "args": ["serve", "$(MODEL_DIR)", "--tensor-parallel-size", "2"],
                    "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}],
                    "resources": {
                        "limits": {"nvidia.com/gpu": "2", "memory": "96Gi"},
                        "requests": {"nvidia.com/gpu": "2", "cpu": "8", "memory": "64Gi"},
                    },
                    "volumeMounts": [KUBE_API_MOUNT],
                },
                {
                    "name": "metrics",
                    "image": "prom/statsd-exporter:v0.26.0",
                    "resources": {"limits": {"memory": "128Mi"}},
                    "volumeMounts": [KUBE_API_MOUNT],
                },
            ],
        },
    }


def bare_pod(caches: str = "tiny", **annotations: str) -> dict[str, Any]:
    """A hand-written pod with no volumes, mounts, env or lifecycle at all."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "chat",
            "namespace": "dev",
            "labels": {LABEL_INJECT: "true"},
            "annotations": {ANN_CACHES: caches, **annotations},
        },
        "spec": {
            "containers": [
                {"name": "app", "image": "python:3.12-slim", "command": ["python3", "-m", "http.server"]}
            ]
        },
    }


def admit(
    pod: dict[str, Any],
    caches: dict[str, CacheView | None],
    settings: InjectionSettings = SETTINGS,
    **kw: Any,
) -> tuple[AdmissionDecision, dict[str, Any]]:
    """Admit a copy of the pod, assert the decision is allowed, and return it with the patched pod."""
    original = copy.deepcopy(pod)
    decision = mutate_pod(pod, caches, settings, **kw)
    assert pod == original, "mutate_pod must not modify its input"
    assert decision.allowed, decision.message
    assert decision.message is None
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, decision.patch)
    return decision, patched


def deny(pod: dict[str, Any], caches: dict[str, CacheView | None], **kw: Any) -> AdmissionDecision:
    decision = mutate_pod(pod, caches, SETTINGS, **kw)
    assert not decision.allowed
    assert decision.patch == []
    assert decision.message
    return decision


def by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(i for i in items if i["name"] == name)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def pinned(pod: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = json.loads(pod["metadata"]["annotations"][ANN_PINNED])
    return result


def folders(pod: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = json.loads(pod["metadata"]["annotations"][ANN_FOLDERS])
    return result


def downloads(pod: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = json.loads(pod["metadata"]["annotations"][ANN_DOWNLOADS])
    return result


# ----- the main shapes -----


def test_statefulset_pod_with_a_ready_cache_gets_the_full_injection() -> None:
    pod = statefulset_pod()
    decision, out = admit(pod, {"deepseek-r1": ready("deepseek-r1", pvc="deepseek-r1")})

    assert decision.warnings == []
    spec_ = out["spec"]
    assert [v["name"] for v in spec_["volumes"]] == [
        "dshm",
        "kube-api-access-7x2kq",
        "mc-deepseek-r1",
        "modelcache-tools",
        "modelcache-prewarm-log",
    ]
    assert by_name(spec_["volumes"], "mc-deepseek-r1") == {
        "name": "mc-deepseek-r1",
        "persistentVolumeClaim": {"claimName": "deepseek-r1", "readOnly": True},
    }
    assert by_name(spec_["volumes"], "modelcache-tools") == {
        "name": "modelcache-tools",
        "emptyDir": {"sizeLimit": "16Mi"},
    }

    (tools,) = spec_["initContainers"]
    assert tools == {
        "name": "modelcache-tools",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["fake-install", "/opt/modelcache"],
        "volumeMounts": [{"name": "modelcache-tools", "mountPath": "/opt/modelcache"}],
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "50m", "memory": "64Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }

    (sglang,) = spec_["containers"]
    assert sglang["volumeMounts"] == [
        {"name": "dshm", "mountPath": "/dev/shm"},
        KUBE_API_MOUNT,
        {"name": "mc-deepseek-r1", "mountPath": "/models/deepseek-r1", "readOnly": True,
         "subPath": folder(SHA_A)},
        {"name": "modelcache-tools", "mountPath": "/opt/modelcache", "readOnly": True},
        {"name": "modelcache-prewarm-log", "mountPath": "/var/log/modelcache"},
    ]
    assert sglang["env"] == [
        {"name": "MODEL_DIR", "value": "/models/deepseek-r1"},
        {"name": "MODEL_DIR_DEEPSEEK_R1", "value": "/models/deepseek-r1"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    assert sglang["lifecycle"] == {
        "postStart": {
            "exec": {
                "command": [
                    "fake-poststart",
                    "/opt/modelcache",
                    "--concurrency=8",
                    "--timeout=900",
                    "--log=/var/log/modelcache/prewarm-sglang.log",
                    "/models/deepseek-r1",
                ]
            }
        }
    }
    assert out["metadata"]["annotations"][ANN_INJECTED] == "true"
    assert pinned(out) == {"deepseek-r1": SHA_A}
    assert folders(out) == {"deepseek-r1": folder(SHA_A)}
    assert downloads(out) == {"deepseek-r1": f"modelcache-system/dl-{SHA_A[:8]}"}
    # What the operator's garbage collection reads back.
    assert pinned_downloads(out["metadata"]["annotations"]) == {f"modelcache-system/dl-{SHA_A[:8]}"}
    # Untouched parts stay untouched.
    assert sglang["command"] == pod["spec"]["containers"][0]["command"]
    assert out["metadata"]["labels"] == pod["metadata"]["labels"]


def test_existing_lists_are_appended_to_and_annotation_keys_are_escaped() -> None:
    decision, _ = admit(statefulset_pod(), {"deepseek-r1": ready("deepseek-r1")})
    paths = [op["path"] for op in decision.patch]
    assert all(op["op"] == "add" for op in decision.patch)
    assert paths.count("/spec/volumes/-") == 3
    assert "/spec/initContainers" in paths  # absent in the pod: added as a whole list
    assert paths.count("/spec/containers/0/volumeMounts/-") == 3
    assert "/spec/containers/0/env" in paths
    assert "/spec/containers/0/lifecycle" in paths
    assert "/metadata/annotations/modelcache.dev~1pinned-revisions" in paths
    assert "/metadata/annotations/modelcache.dev~1folders" in paths
    assert "/metadata/annotations/modelcache.dev~1downloads" in paths
    assert "/metadata/annotations/modelcache.dev~1injected" in paths


def test_json_pointer_escapes_tilde_before_slash() -> None:
    assert json_pointer("metadata", "annotations", "a.io/b~c") == "/metadata/annotations/a.io~1b~0c"
    assert json_pointer("spec", "containers", 3, "env", "-") == "/spec/containers/3/env/-"


def test_bare_pod_gets_whole_lists_added() -> None:
    decision, out = admit(bare_pod(), {"tiny": ready("tiny", size=GIB)}, namespace="dev")
    ops = {op["path"]: op["value"] for op in decision.patch}
    assert set(ops) == {
        "/spec/volumes",
        "/spec/initContainers",
        "/spec/containers/0/volumeMounts",
        "/spec/containers/0/env",
        "/spec/containers/0/lifecycle",
        "/metadata/annotations/modelcache.dev~1pinned-revisions",
        "/metadata/annotations/modelcache.dev~1folders",
        "/metadata/annotations/modelcache.dev~1downloads",
        "/metadata/annotations/modelcache.dev~1injected",
    }
    assert [v["name"] for v in ops["/spec/volumes"]] == [
        "mc-tiny",
        "modelcache-tools",
        "modelcache-prewarm-log",
    ]
    app = out["spec"]["containers"][0]
    assert app["volumeMounts"][0] == {
        "name": "mc-tiny",
        "mountPath": "/models/tiny",
        "readOnly": True,
        "subPath": folder(SHA_A),
    }
    assert env_of(app)["MODEL_DIR"] == "/models/tiny"
    # No memory limit while prewarm is on.
    assert decision.warnings == [
        'container "app" has no memory limit while prewarm loads 1.0 GiB of tiny into the page cache; set '
        "resources.limits.memory to at least 3.0 GiB (model + 2.0 GiB overhead) plus what the server "
        "itself needs"
    ]


def test_deployment_pod_injects_only_the_gpu_container_and_puts_our_init_containers_first() -> None:
    cache = downloading("qwen3-coder", resolved=SHA_B, pvc="mc-qwen3-coder")
    decision, out = admit(deployment_pod(), {"qwen3-coder": cache}, namespace="llm")

    vllm, metrics = out["spec"]["containers"]
    assert metrics == deployment_pod()["spec"]["containers"][1]
    assert [i["name"] for i in out["spec"]["initContainers"]] == [
        "modelcache-tools",
        "modelcache-wait-qwen3-coder",
        "fetch-lora",
    ]
    wait = out["spec"]["initContainers"][1]
    assert wait["command"] == ["fake-wait", "/opt/modelcache", f"/models/qwen3-coder/all/{SHA_B}", "21600"]
    # The wait container sees the whole volume (no subPath: the revision folder may not exist yet).
    assert wait["volumeMounts"] == [
        {"name": "mc-qwen3-coder", "mountPath": "/models/qwen3-coder", "readOnly": True},
        {"name": "modelcache-tools", "mountPath": "/opt/modelcache", "readOnly": True},
    ]
    assert wait["resources"]["requests"] == wait["resources"]["limits"]
    assert vllm["env"][0] == {"name": "MODEL_DIR", "value": "/models/qwen3-coder"}
    assert vllm["env"][-1] == {"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}
    assert {
        "name": "mc-qwen3-coder",
        "mountPath": "/models/qwen3-coder",
        "readOnly": True,
        "subPath": folder(SHA_B),
    } in vllm["volumeMounts"]
    assert pinned(out) == {"qwen3-coder": SHA_B}
    assert folders(out) == {"qwen3-coder": folder(SHA_B)}
    assert downloads(out) == {"qwen3-coder": f"modelcache-system/dl-{SHA_B[:8]}"}  # the running download
    # 96Gi limit vs 20 GiB (bytesTotal of the running download) + 2 GiB: fine.
    assert decision.warnings == []


def test_first_container_is_the_target_when_none_requests_a_gpu() -> None:
    pod = deployment_pod()
    for c in pod["spec"]["containers"]:
        c["resources"] = {"limits": {"memory": "900Gi"}}
    _, out = admit(pod, {"qwen3-coder": ready("qwen3-coder")})
    vllm, metrics = out["spec"]["containers"]
    assert "MODEL_DIR" in env_of(vllm)
    assert "env" not in metrics
    assert "lifecycle" not in metrics


def test_any_vendor_gpu_resource_selects_the_container() -> None:
    pod = deployment_pod()
    pod["spec"]["containers"][0]["resources"] = {"limits": {"memory": "900Gi"}}
    pod["spec"]["containers"][1]["resources"] = {
        "requests": {"amd.com/gpu": "1"},
        "limits": {"memory": "900Gi"},
    }
    _, out = admit(pod, {"qwen3-coder": ready("qwen3-coder")})
    vllm, metrics = out["spec"]["containers"]
    assert "MODEL_DIR" in env_of(metrics)
    assert "MODEL_DIR" not in env_of(vllm)


def test_containers_annotation_overrides_the_targets() -> None:
    pod = deployment_pod(**{ANN_CONTAINERS: "vllm, metrics"})
    decision, out = admit(pod, {"qwen3-coder": ready("qwen3-coder", size=10 * GIB)})
    vllm, metrics = out["spec"]["containers"]
    for container in (vllm, metrics):
        assert env_of(container)["MODEL_DIR"] == "/models/qwen3-coder"
        log = container["lifecycle"]["postStart"]["exec"]["command"][4]
        assert log == f"--log=/var/log/modelcache/prewarm-{container['name']}.log"
    # 128Mi is far below 10 GiB + 2 GiB.
    assert decision.warnings == [
        'container "metrics" memory limit 128Mi (128.0 MiB) is below the prewarmed model size 10.0 GiB '
        "(qwen3-coder) + 2.0 GiB overhead = 12.0 GiB; the warmed page cache will be reclaimed. Raise "
        "resources.limits.memory or set spec.prewarm.mode: off"
    ]


def test_containers_annotation_with_an_unknown_name_is_denied() -> None:
    decision = deny(deployment_pod(**{ANN_CONTAINERS: "vllm,vlm"}), {"qwen3-coder": ready("qwen3-coder")})
    assert decision.message == (
        f"annotation {ANN_CONTAINERS} names vlm, which the pod does not have (containers: vllm, metrics)"
    )


def test_empty_containers_annotation_mounts_nothing_and_warns_about_prewarm() -> None:
    decision, out = admit(deployment_pod(**{ANN_CONTAINERS: ""}), {"qwen3-coder": ready("qwen3-coder")})
    assert out["spec"]["containers"] == deployment_pod()["spec"]["containers"]
    assert [v["name"] for v in out["spec"]["volumes"]] == ["kube-api-access-7x2kq", "mc-qwen3-coder"]
    assert [i["name"] for i in out["spec"]["initContainers"]] == ["fetch-lora"]
    assert decision.warnings == [
        f'ModelCache "qwen3-coder" has prewarm mode postStart but no container in this pod receives it '
        f"({ANN_CONTAINERS} lists none); nothing is warmed"
    ]


# ----- several caches -----


def test_several_caches_primary_model_dir_and_one_variable_per_cache() -> None:
    pod = statefulset_pod("deepseek-r1, qwen.embed ,deepseek-r1")
    caches: dict[str, CacheView | None] = {
        "deepseek-r1": ready("deepseek-r1", SHA_A, prewarm={"concurrency": 4, "timeoutSeconds": 600}),
        "qwen.embed": ready(
            "qwen.embed",
            SHA_C,
            size=GIB,
            modelscope=True,
            serving={"mountPath": "/data/embed"},
            prewarm={"concurrency": 16, "timeoutSeconds": 120},
        ),
    }
    _, out = admit(pod, caches)
    sglang = out["spec"]["containers"][0]
    assert env_of(sglang) == {
        "MODEL_DIR": "/models/deepseek-r1",
        "MODEL_DIR_DEEPSEEK_R1": "/models/deepseek-r1",
        "MODEL_DIR_QWEN_EMBED": "/data/embed",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    assert {
        "name": "mc-qwen-embed",
        "mountPath": "/data/embed",
        "readOnly": True,
        "subPath": folder(SHA_C),
    } in sglang["volumeMounts"]
    assert pinned(out) == {"deepseek-r1": SHA_A, "qwen.embed": SHA_C}
    # One hook over both caches: the highest concurrency and timeout win.
    assert sglang["lifecycle"]["postStart"]["exec"]["command"] == [
        "fake-poststart",
        "/opt/modelcache",
        "--concurrency=16",
        "--timeout=600",
        "--log=/var/log/modelcache/prewarm-sglang.log",
        "/models/deepseek-r1",
        "/data/embed",
    ]


def test_modelscope_only_pod_gets_no_hugging_face_offline_variables() -> None:
    _, out = admit(bare_pod("ms"), {"ms": ready("ms", size=GIB, modelscope=True)})
    assert env_of(out["spec"]["containers"][0]) == {"MODEL_DIR": "/models/ms", "MODEL_DIR_MS": "/models/ms"}


def test_two_caches_on_the_same_mount_path_are_denied() -> None:
    caches: dict[str, CacheView | None] = {
        "a": ready("a", serving={"mountPath": "/models/m"}),
        "b": ready("b", serving={"mountPath": "/models/m/"}),
    }
    decision = deny(bare_pod("a,b"), caches)
    assert decision.message == (
        'ModelCaches "a" and "b" both mount at /models/m/; set spec.serving.mountPath on one of them'
    )


def test_env_variable_collision_between_cache_names_is_warned_not_duplicated() -> None:
    decision, out = admit(bare_pod("m.x,m-x"), {"m.x": ready("m.x", size=GIB), "m-x": ready("m-x", size=GIB)})
    names = [e["name"] for e in out["spec"]["containers"][0]["env"]]
    assert names.count("MODEL_DIR_M_X") == 1
    assert env_of(out["spec"]["containers"][0])["MODEL_DIR_M_X"] == "/models/m.x"
    assert 'MODEL_DIR_M_X already names another ModelCache, so it is not set for "m-x"' in decision.warnings
    # The volumes still get distinct names.
    assert [v["name"] for v in out["spec"]["volumes"]][:2] == ["mc-m-x", "mc-m-x-2"]


# ----- names -----


def test_volume_name_clash_with_a_user_volume_gets_a_suffix() -> None:
    pod = statefulset_pod()
    pod["spec"]["volumes"].append({"name": "mc-deepseek-r1", "hostPath": {"path": "/data/old"}})
    pod["spec"]["volumes"].append({"name": "modelcache-tools", "emptyDir": {}})
    _, out = admit(pod, {"deepseek-r1": ready("deepseek-r1")})
    assert by_name(out["spec"]["volumes"], "mc-deepseek-r1") == {
        "name": "mc-deepseek-r1",
        "hostPath": {"path": "/data/old"},
    }
    assert by_name(out["spec"]["volumes"], "mc-deepseek-r1-2")["persistentVolumeClaim"]["claimName"] == (
        "mc-deepseek-r1"
    )
    mounts = {m["name"]: m for m in out["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["mc-deepseek-r1-2"]["subPath"] == folder(SHA_A)
    assert mounts["modelcache-tools-2"]["mountPath"] == "/opt/modelcache"
    assert out["spec"]["initContainers"][0]["volumeMounts"][0]["name"] == "modelcache-tools-2"


def test_long_dotted_cache_names_become_valid_volume_and_container_names() -> None:
    name = "qwen2.5-coder-32b-instruct-awq.int4-groupsize128-revision-2025-11-01-final"
    _, out = admit(bare_pod(name), {name: downloading(name, resolved=SHA_B)})
    volume = out["spec"]["volumes"][0]["name"]
    wait = out["spec"]["initContainers"][1]["name"]
    for label in (volume, wait):
        assert DNS_LABEL.match(label), label
        assert len(label) <= 63
    assert volume.startswith("mc-qwen2-5-coder-32b")
    assert wait.startswith("modelcache-wait-qwen2-5-coder")
    assert "MODEL_DIR_QWEN2_5_CODER_32B_INSTRUCT_AWQ_INT4_GROUPSIZE128_REVISION_2025_11_01_FINAL" in env_of(
        out["spec"]["containers"][0]
    )


def test_a_user_init_container_with_our_name_is_denied() -> None:
    pod = bare_pod()
    pod["spec"]["initContainers"] = [{"name": "modelcache-tools", "image": "busybox"}]
    decision = deny(pod, {"tiny": ready("tiny")})
    assert decision.message == (
        'the pod already has a container named "modelcache-tools", which ModelCache '
        "injection needs; rename it"
    )


def test_a_different_mount_at_the_cache_path_is_denied() -> None:
    pod = statefulset_pod()
    pod["spec"]["volumes"].append(
        {"name": "model-storage", "persistentVolumeClaim": {"claimName": "deepseek-r1"}}
    )
    pod["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "model-storage", "mountPath": "/models/deepseek-r1/"}
    )
    decision = deny(pod, {"deepseek-r1": ready("deepseek-r1")})
    assert decision.message == (
        'container "sglang" already mounts volume "model-storage" at /models/deepseek-r1; '
        'set spec.serving.mountPath on ModelCache "deepseek-r1" or remove that mount'
    )


# ----- env -----


def test_user_env_is_never_overridden_and_ours_is_prepended() -> None:
    pod = statefulset_pod()
    pod["spec"]["containers"][0]["env"] = [
        {"name": "MODEL_DIR", "value": "/custom/model"},
        {"name": "HF_HUB_OFFLINE", "value": "0"},
        {"name": "WEIGHTS", "value": "$(MODEL_DIR_DEEPSEEK_R1)/weights"},
    ]
    decision, out = admit(pod, {"deepseek-r1": ready("deepseek-r1")})
    assert out["spec"]["containers"][0]["env"] == [
        {"name": "MODEL_DIR_DEEPSEEK_R1", "value": "/models/deepseek-r1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "MODEL_DIR", "value": "/custom/model"},
        {"name": "HF_HUB_OFFLINE", "value": "0"},
        {"name": "WEIGHTS", "value": "$(MODEL_DIR_DEEPSEEK_R1)/weights"},
    ]
    env_paths = [op["path"] for op in decision.patch if "/env" in op["path"]]
    assert env_paths == ["/spec/containers/0/env/0", "/spec/containers/0/env/1", "/spec/containers/0/env/2"]


def test_env_from_is_warned_about() -> None:
    pod = bare_pod()
    pod["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "model-settings"}}]
    pod["spec"]["containers"][0]["resources"] = {"limits": {"memory": "8Gi"}}
    decision, _ = admit(pod, {"tiny": ready("tiny", size=GIB)})
    assert decision.warnings == [
        'container "app" uses envFrom; the injected MODEL_DIR, MODEL_DIR_TINY, HF_HUB_OFFLINE, '
        "TRANSFORMERS_OFFLINE, HF_HUB_DISABLE_TELEMETRY take precedence over keys of the same name there"
    ]


# ----- postStart -----

TRICKY_ARGV = [
    "/bin/sh",
    "-c",
    'printf "%s\\n" "$@" >> "$0"',
    "TRACE",
    "a b",
    "$(touch pwned)",
    "`id`",
    "'; rm -rf . #",
    "*",
    "",
    '--flag="x"',
]


def exec_hook_pod(argv: list[str]) -> dict[str, Any]:
    pod = statefulset_pod()
    pod["spec"]["containers"][0]["lifecycle"] = {
        "postStart": {"exec": {"command": argv}},
        "preStop": {"sleep": {"seconds": 5}},
    }
    return pod


def test_existing_exec_poststart_is_chained_with_the_user_argv_as_positional_parameters() -> None:
    _, out = admit(exec_hook_pod(TRICKY_ARGV), {"deepseek-r1": ready("deepseek-r1")})
    lifecycle = out["spec"]["containers"][0]["lifecycle"]
    assert lifecycle["preStop"] == {"sleep": {"seconds": 5}}
    command = lifecycle["postStart"]["exec"]["command"]
    ours = fake_poststart(
        "/opt/modelcache", ["/models/deepseek-r1"], 8, 900, "/var/log/modelcache/prewarm-sglang.log"
    )
    assert command == ["/bin/sh", "-c", command[2], CHAIN_ARGV0, *TRICKY_ARGV]
    assert command == chain_poststart(ours, TRICKY_ARGV)
    # The shell text holds only our own (quoted) command, never the user's argv.
    for arg in ("$(touch pwned)", "`id`", "'; rm -rf . #"):
        assert arg not in command[2]
    assert command[2].endswith('; exec "$@"')


def test_chained_hook_runs_ours_then_the_user_argv_verbatim(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    ours = ["/bin/sh", "-c", 'printf "ours %s\\n" "$1" >> "$0"', str(trace), 'it\'s "quoted" $HOME']
    user = [*TRICKY_ARGV[:3], str(trace), *TRICKY_ARGV[4:]]
    result = subprocess.run(chain_poststart(ours, user), cwd=tmp_path, check=False)
    assert result.returncode == 0
    assert trace.read_text().split("\n")[:-1] == ['ours it\'s "quoted" $HOME', *TRICKY_ARGV[4:]]
    assert not (tmp_path / "pwned").exists()


def test_chained_hook_keeps_the_user_hook_exit_status(tmp_path: Path) -> None:
    result = subprocess.run(chain_poststart(["true"], ["/bin/sh", "-c", "exit 3"]), cwd=tmp_path, check=False)
    assert result.returncode == 3


def test_chain_with_the_real_prewarm_hook_preserves_the_user_argv(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\0" * 4096)
    ours = hook.poststart_command(str(tmp_path / "no-tools"), [str(model)], 2, 5, str(tmp_path / "log"))
    user = ["/bin/sh", "-c", 'printf "%s\\n" "$@" > "$0"', str(trace), "$(touch pwned)", "x y"]
    result = subprocess.run(
        chain_poststart(ours, user), cwd=tmp_path, check=False, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert trace.read_text() == "$(touch pwned)\nx y\n"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("hook_", "kind"),
    [
        ({"httpGet": {"path": "/warm", "port": 8000}}, "httpGet"),
        ({"tcpSocket": {"port": 8000}}, "tcpSocket"),
        ({"sleep": {"seconds": 10}}, "sleep"),
    ],
)
def test_non_exec_poststart_is_denied_with_a_way_out(hook_: dict[str, Any], kind: str) -> None:
    pod = statefulset_pod()
    pod["spec"]["containers"][0]["lifecycle"] = {"postStart": hook_}
    decision = deny(pod, {"deepseek-r1": ready("deepseek-r1")})
    assert decision.message == (
        f'container "sglang" already has a {kind} postStart hook, which cannot be chained with the prewarm '
        f"hook; set spec.prewarm.mode: initContainer on ModelCache deepseek-r1 or annotate the pod "
        f'{ANN_PREWARM}: "off"'
    )


def test_httpget_poststart_is_fine_when_prewarm_is_off_or_runs_as_init_container() -> None:
    for pod, cache in (
        (statefulset_pod(**{ANN_PREWARM: "off"}), ready("deepseek-r1")),
        (statefulset_pod(), ready("deepseek-r1", prewarm={"mode": "initContainer"})),
    ):
        pod["spec"]["containers"][0]["lifecycle"] = {"postStart": {"httpGet": {"path": "/", "port": 8000}}}
        _, out = admit(pod, {"deepseek-r1": cache})
        assert out["spec"]["containers"][0]["lifecycle"] == {
            "postStart": {"httpGet": {"path": "/", "port": 8000}}
        }


def test_lifecycle_without_poststart_gets_ours_beside_prestop() -> None:
    pod = statefulset_pod()
    pod["spec"]["containers"][0]["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    _, out = admit(pod, {"deepseek-r1": ready("deepseek-r1")})
    lifecycle = out["spec"]["containers"][0]["lifecycle"]
    assert lifecycle["preStop"] == {"exec": {"command": ["sleep", "5"]}}
    assert lifecycle["postStart"]["exec"]["command"][0] == "fake-poststart"


# ----- idempotence -----


@pytest.mark.parametrize("make", [statefulset_pod, deployment_pod, bare_pod])
def test_readmitting_a_mutated_pod_yields_an_empty_patch(make: Any) -> None:
    pod = make()
    name = pod["metadata"]["annotations"][ANN_CACHES]
    pod["spec"]["containers"][0].setdefault("lifecycle", {"postStart": {"exec": {"command": ["echo", "hi"]}}})
    _, once = admit(pod, {name: downloading(name, resolved=SHA_B)}, namespace="llm")
    assert folders(once) == {name: folder(SHA_B)}
    # Even after the cache moved on to a new Ready revision, the admitted pod keeps its pin.
    again, twice = admit(once, {name: ready(name, SHA_C)}, namespace="llm")
    assert again.patch == []
    assert again.warnings == []
    assert twice == once


def test_readmission_without_the_injected_annotation_adds_nothing_twice() -> None:
    _, once = admit(exec_hook_pod(["/bin/sh", "-c", "echo user"]), {"deepseek-r1": ready("deepseek-r1")})
    del once["metadata"]["annotations"][ANN_INJECTED]
    again, twice = admit(once, {"deepseek-r1": ready("deepseek-r1")})
    assert again.patch == [
        {"op": "add", "path": "/metadata/annotations/modelcache.dev~1injected", "value": "true"}
    ]
    assert twice["spec"] == once["spec"]


def test_a_copied_injected_annotation_without_our_volumes_is_injected_again() -> None:
    pod = bare_pod(
        **{
            ANN_INJECTED: "true",
            ANN_PINNED: json.dumps({"tiny": SHA_B}),
            ANN_FOLDERS: json.dumps({"tiny": folder(SHA_B)}),
        }
    )
    _, out = admit(pod, {"tiny": ready("tiny")})
    assert pinned(out) == {"tiny": SHA_A}
    assert folders(out) == {"tiny": folder(SHA_A)}
    assert out["spec"]["volumes"][0]["name"] == "mc-tiny"


def test_idempotence_compares_the_mounted_subpaths_with_the_folders_annotation() -> None:
    _, once = admit(bare_pod(), {"tiny": ready("tiny", SHA_A, path=f"f-1a2b3c4d/{SHA_A}")})
    assert once["spec"]["containers"][0]["volumeMounts"][0]["subPath"] == f"f-1a2b3c4d/{SHA_A}"
    # A pod whose folders annotation names another folder than the one it mounts is not "already injected":
    # the cache's current folder is mounted at the same path, which the pod already uses for another one.
    tampered = copy.deepcopy(once)
    tampered["metadata"]["annotations"][ANN_FOLDERS] = json.dumps({"tiny": f"all/{SHA_A}"})
    decision = deny(tampered, {"tiny": ready("tiny", SHA_A, path=f"all/{SHA_A}")})
    assert decision.message is not None
    assert 'container "app" already mounts volume "mc-tiny" at /models/tiny' in decision.message
    # Without the folders annotation (a pod pinned by an older operator) neither.
    old = copy.deepcopy(once)
    del old["metadata"]["annotations"][ANN_FOLDERS]
    again, _ = admit(old, {"tiny": ready("tiny", SHA_A, path=f"f-1a2b3c4d/{SHA_A}")})
    assert again.patch == [
        {
            "op": "add",
            "path": "/metadata/annotations/modelcache.dev~1folders",
            "value": json.dumps({"tiny": f"f-1a2b3c4d/{SHA_A}"}),
        }
    ]


# ----- the served revision -----


@pytest.mark.parametrize("phase", ["Downloading", "Verifying", "Failed", "Provisioning"])
def test_during_a_revision_change_new_pods_get_the_published_revision_without_waiting(phase: str) -> None:
    """The spec moved to a new revision (SHA_B, downloading into its own folder): new pods still get the
    complete old one (SHA_A), whatever the phase and the notReadyPolicy."""
    cache = downloading(
        "deepseek-r1", phase=phase, published=SHA_A, resolved=SHA_B, serving={"notReadyPolicy": "deny"}
    )
    decision, out = admit(statefulset_pod(), {"deepseek-r1": cache})
    assert pinned(out) == {"deepseek-r1": SHA_A}
    assert folders(out) == {"deepseek-r1": folder(SHA_A)}
    # The download that published SHA_A, not the running one (downloadRef, SHA_B's): GC keeps SHA_A's folder.
    assert downloads(out) == {"deepseek-r1": f"modelcache-system/dl-{SHA_A[:8]}"}
    assert [i["name"] for i in out["spec"]["initContainers"]] == ["modelcache-tools"]  # no wait container
    mount = by_name(out["spec"]["containers"][0]["volumeMounts"], "mc-deepseek-r1")
    assert mount == {
        "name": "mc-deepseek-r1",
        "mountPath": "/models/deepseek-r1",
        "readOnly": True,
        "subPath": folder(SHA_A),
    }
    assert by_name(out["spec"]["volumes"], "mc-deepseek-r1")["persistentVolumeClaim"]["claimName"] == "pvc-x"
    assert decision.warnings == []


def test_the_revision_path_is_the_subpath_whatever_its_shape() -> None:
    """storageClass stores keep every model in one namespace claim: the path carries the model's folder."""
    path = f"hf/Qwen/Qwen3-0.6B/all/{SHA_A}"
    _, out = admit(bare_pod(), {"tiny": ready("tiny", SHA_A, path=path, size=GIB)})
    assert out["spec"]["containers"][0]["volumeMounts"][0]["subPath"] == path
    assert folders(out) == {"tiny": path}
    assert pinned(out) == {"tiny": SHA_A}


def test_a_deleting_cache_is_not_served_even_with_a_published_revision() -> None:
    cache = downloading("tiny", phase="Deleting", published=SHA_A)
    decision = deny(bare_pod(), {"tiny": cache})
    assert decision.message == (
        'ModelCache "tiny" in namespace "dev" is not Ready (phase Deleting; Ready=False '
        'DownloadInProgress: 3/17 files); ModelCache "tiny" spec.serving.notReadyPolicy is wait, but a '
        "Deleting cache does not become Ready by waiting"
    )
    ignored, out = admit(bare_pod(**{ANN_NOT_READY_POLICY: "ignore"}), {"tiny": cache})
    assert ignored.patch == [] and out == bare_pod(**{ANN_NOT_READY_POLICY: "ignore"})
    assert ignored.warnings[0].endswith(f"not injected because annotation {ANN_NOT_READY_POLICY} is ignore")


def test_a_pin_without_a_known_download_is_left_out_of_the_downloads_annotation() -> None:
    status = ModelCacheStatus(phase="Ready", resolvedRevision=SHA_A, revisionPath=folder(SHA_A), pvcName="p")
    caches: dict[str, CacheView | None] = {
        "a": CacheView(name="a", spec=spec(), status=status),
        "b": ready("b", SHA_C, size=GIB),
    }
    _, out = admit(bare_pod("a,b"), caches)
    assert pinned(out) == {"a": SHA_A, "b": SHA_C}
    assert downloads(out) == {"b": f"modelcache-system/dl-{SHA_C[:8]}"}


def test_a_published_revision_without_its_path_is_not_served() -> None:
    status = ModelCacheStatus(phase="Ready", resolvedRevision=SHA_A, pvcName="p")
    cache = CacheView(name="tiny", spec=spec(serving={"notReadyPolicy": "deny"}), status=status)
    decision = deny(bare_pod(), {"tiny": cache})
    assert decision.message is not None
    assert "(phase Ready; no revision published yet) and" in decision.message


# ----- caches in other namespaces -----


@pytest.mark.parametrize("entry", ["team-b/qwen", "/qwen", "team-b/"])
def test_a_cache_of_another_namespace_is_denied(entry: str) -> None:
    decision = deny(bare_pod(f"tiny,{entry}"), {"tiny": ready("tiny"), entry: ready("qwen")})
    assert decision.message == (
        f'annotation {ANN_CACHES} names "{entry}": caches are looked up in the pod\'s namespace only; a pod '
        "cannot use another namespace's cache. Create a ModelCache in this namespace instead"
    )


@pytest.mark.parametrize("entry", ["Qwen3", "qwen_3", "-qwen", "qwen.", "a" * 254, "q:1"])
def test_a_cache_name_that_is_not_a_dns_subdomain_is_denied(entry: str) -> None:
    decision = deny(bare_pod(entry), {entry: ready("x")})
    assert decision.message == (
        f'annotation {ANN_CACHES} names "{entry}", which is not a ModelCache name (a DNS subdomain: '
        'lowercase letters, digits, "-" and ".", at most 253 characters)'
    )


def test_dotted_cache_names_are_fine() -> None:
    _, out = admit(bare_pod("qwen.embed-v2"), {"qwen.embed-v2": ready("qwen.embed-v2", size=GIB)})
    assert pinned(out) == {"qwen.embed-v2": SHA_A}


# ----- not-Ready policies (nothing published yet) -----


def test_wait_pins_the_pending_revision_in_its_pending_folder() -> None:
    cache = downloading("tiny", resolved=SHA_B, pending=f"f-1a2b3c4d/{SHA_B}", prewarm={"mode": "off"})
    _, out = admit(bare_pod(), {"tiny": cache})
    assert pinned(out) == {"tiny": SHA_B}
    assert folders(out) == {"tiny": f"f-1a2b3c4d/{SHA_B}"}
    tools, wait = out["spec"]["initContainers"]
    assert (tools["name"], wait["name"]) == ("modelcache-tools", "modelcache-wait-tiny")
    # The wait container mounts the whole claim and waits for the pending folder's manifest ...
    assert wait["command"] == ["fake-wait", "/opt/modelcache", f"/models/tiny/f-1a2b3c4d/{SHA_B}", "21600"]
    assert wait["volumeMounts"][0] == {"name": "mc-tiny", "mountPath": "/models/tiny", "readOnly": True}
    # ... and the serving container mounts exactly that folder.
    assert out["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "mc-tiny", "mountPath": "/models/tiny", "readOnly": True, "subPath": f"f-1a2b3c4d/{SHA_B}"}
    ]


def test_wait_denies_while_the_pending_folder_is_unknown() -> None:
    cache = downloading("tiny", resolved=SHA_B, pending=None)
    decision = deny(bare_pod(), {"tiny": cache})
    assert decision.message == (
        'ModelCache "tiny" in namespace "dev" is not Ready (phase Downloading; Ready=False '
        "DownloadInProgress: 3/17 files; no revision published yet) and is still resolving its revision and "
        "volume; the pod is denied for now and its controller will retry"
    )


def test_wait_pins_a_spec_commit_sha_only_in_that_commits_pending_folder() -> None:
    cache = downloading("tiny", resolved=None, requested=None, revision=SHA_C.upper(), pending=folder(SHA_C))
    _, out = admit(bare_pod(), {"tiny": cache})
    assert pinned(out) == {"tiny": SHA_C}
    assert out["spec"]["initContainers"][1]["command"] == [
        "fake-wait",
        "/opt/modelcache",
        f"/models/tiny/all/{SHA_C}",
        "21600",
    ]
    # Before the folder is known, or when the pending folder is another commit's, the sha is not enough.
    for pending in (None, folder(SHA_B)):
        cache = downloading("tiny", resolved=None, requested=None, revision=SHA_C, pending=pending)
        message = deny(bare_pod(), {"tiny": cache}).message
        assert message is not None and "is still resolving its revision and volume" in message


def test_wait_ignores_a_download_report_for_another_requested_revision() -> None:
    cache = downloading("tiny", resolved=SHA_B, requested="v1", revision="v2")
    decision = deny(bare_pod(), {"tiny": cache}, namespace="dev")
    assert decision.message == (
        'ModelCache "tiny" in namespace "dev" is not Ready (phase Downloading; Ready=False '
        "DownloadInProgress: "
        "3/17 files; no revision published yet) and is still resolving its revision and volume; the pod is "
        "denied for now and its controller will retry"
    )


def test_wait_denies_until_the_revision_is_known() -> None:
    cache = CacheView(name="tiny", spec=spec(), status=ModelCacheStatus(phase="Pending"))
    decision = deny(bare_pod(), {"tiny": cache})
    assert decision.message is not None
    assert 'ModelCache "tiny" in namespace "dev" is not Ready (phase Pending; status.pvcName not set)' in (
        decision.message
    )
    assert "the pod is denied for now and its controller will retry" in decision.message


def test_wait_treats_a_missing_pvc_name_as_not_ready() -> None:
    decision = deny(bare_pod(), {"tiny": downloading("tiny", pvc=None)})
    assert decision.message is not None
    assert "status.pvcName not set" in decision.message


def test_wait_on_a_failed_cache_is_denied() -> None:
    decision = deny(bare_pod(), {"tiny": downloading("tiny", phase="Failed")})
    assert decision.message == (
        'ModelCache "tiny" in namespace "dev" is not Ready (phase Failed; Ready=False '
        "DownloadInProgress: 3/17 "
        'files; no revision published yet); ModelCache "tiny" spec.serving.notReadyPolicy is wait, but a '
        "Failed cache does not become Ready by waiting"
    )


def test_deny_policy_names_the_cache_phase_and_reason() -> None:
    cache = downloading("deepseek-r1", serving={"notReadyPolicy": "deny"})
    decision = deny(statefulset_pod(), {"deepseek-r1": cache})
    assert decision.message == (
        'ModelCache "deepseek-r1" in namespace "llm" is not Ready (phase Downloading; Ready=False '
        'DownloadInProgress: 3/17 files; no revision published yet) and ModelCache "deepseek-r1" '
        "spec.serving.notReadyPolicy is deny; create the pod again once the cache is Ready"
    )


def test_pod_annotation_overrides_the_cache_policy() -> None:
    decision = deny(
        statefulset_pod(**{ANN_NOT_READY_POLICY: "deny"}), {"deepseek-r1": downloading("deepseek-r1")}
    )
    assert decision.message is not None
    assert f"annotation {ANN_NOT_READY_POLICY} is deny" in decision.message

    pod = statefulset_pod(**{ANN_NOT_READY_POLICY: "wait"})
    _, out = admit(pod, {"deepseek-r1": downloading("deepseek-r1", serving={"notReadyPolicy": "deny"})})
    assert [i["name"] for i in out["spec"]["initContainers"]] == [
        "modelcache-tools",
        "modelcache-wait-deepseek-r1",
    ]


def test_ready_phase_without_pvc_name_is_not_ready() -> None:
    status = ModelCacheStatus(phase="Ready", resolvedRevision=SHA_A, revisionPath=folder(SHA_A))
    cache = CacheView(name="tiny", spec=spec(serving={"notReadyPolicy": "deny"}), status=status)
    decision = deny(bare_pod(), {"tiny": cache})
    assert decision.message is not None
    assert "(phase Ready; status.pvcName not set)" in decision.message


def test_ignore_policy_allows_without_injection() -> None:
    pod = statefulset_pod()
    cache = downloading("deepseek-r1", serving={"notReadyPolicy": "ignore"})
    decision, out = admit(pod, {"deepseek-r1": cache})
    assert decision.patch == []
    assert out == pod
    assert decision.warnings == [
        'ModelCache "deepseek-r1" in namespace "llm" is not Ready (phase Downloading; Ready=False '
        'DownloadInProgress: 3/17 files; no revision published yet); not injected because ModelCache "deepseek-r1" '
        "spec.serving.notReadyPolicy is ignore"
    ]


def test_ignored_primary_cache_leaves_model_dir_unset() -> None:
    caches: dict[str, CacheView | None] = {
        "main": downloading("main", serving={"notReadyPolicy": "ignore"}),
        "draft": ready("draft", size=GIB),
    }
    decision, out = admit(statefulset_pod("main,draft"), caches)
    assert env_of(out["spec"]["containers"][0])["MODEL_DIR_DRAFT"] == "/models/draft"
    assert "MODEL_DIR" not in env_of(out["spec"]["containers"][0])
    assert pinned(out) == {"draft": SHA_A}
    assert 'primary ModelCache "main" is not injected, so MODEL_DIR is not set' in decision.warnings


@pytest.mark.parametrize("caches", [{"deepseek-r1": None}, {}])
def test_missing_cache_is_denied_under_wait(caches: dict[str, CacheView | None]) -> None:
    decision = deny(deployment_pod("deepseek-r1"), caches, namespace="llm")
    assert decision.message == (
        f'ModelCache "deepseek-r1" not found in namespace "llm"; create it or remove it '
        f"from the {ANN_CACHES} annotation"
    )


def test_missing_cache_is_skipped_under_ignore() -> None:
    pod = statefulset_pod("gone,deepseek-r1", **{ANN_NOT_READY_POLICY: "ignore"})
    decision, out = admit(pod, {"gone": None, "deepseek-r1": ready("deepseek-r1")})
    assert pinned(out) == {"deepseek-r1": SHA_A}
    assert decision.warnings == [
        f'ModelCache "gone" not found in namespace "llm"; not injected ({ANN_NOT_READY_POLICY} is ignore)',
        'primary ModelCache "gone" is not injected, so MODEL_DIR is not set',
    ]


def test_all_errors_are_reported_together() -> None:
    decision = deny(
        statefulset_pod("a,b"), {"a": None, "b": downloading("b", serving={"notReadyPolicy": "deny"})}
    )
    assert decision.message is not None
    assert decision.message.startswith('ModelCache "a" not found')
    assert '; ModelCache "b" in namespace "llm" is not Ready' in decision.message


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {ANN_NOT_READY_POLICY: "wiat"},
            f"annotation {ANN_NOT_READY_POLICY} is 'wiat'; use one of gate, wait, deny, ignore",
        ),
        ({ANN_PREWARM: "false"}, f"annotation {ANN_PREWARM} is 'false'; use off or on"),
    ],
)
def test_invalid_annotation_values_are_denied(annotations: dict[str, str], message: str) -> None:
    assert deny(statefulset_pod(**annotations), {"deepseek-r1": ready("deepseek-r1")}).message == message


@pytest.mark.parametrize("value", [None, "", " , "])
def test_label_without_cache_names_is_allowed_unchanged_with_a_warning(value: str | None) -> None:
    pod = bare_pod()
    if value is None:
        del pod["metadata"]["annotations"][ANN_CACHES]
    else:
        pod["metadata"]["annotations"][ANN_CACHES] = value
    decision, out = admit(pod, {})
    assert out == pod
    assert decision.warnings == [
        f"pod has label {LABEL_INJECT}=true but no ModelCache names in annotation "
        f"{ANN_CACHES}; nothing injected"
    ]


def test_pod_without_the_label_is_left_alone() -> None:
    pod = bare_pod()
    pod["metadata"]["labels"] = {LABEL_INJECT: "false"}
    decision, out = admit(pod, {"tiny": ready("tiny")})
    assert (decision.patch, decision.warnings, out) == ([], [], pod)


# ----- prewarm modes -----


def test_prewarm_off_annotation_injects_only_the_cache() -> None:
    pod = statefulset_pod(**{ANN_PREWARM: "off"})
    pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = "1Gi"
    decision, out = admit(pod, {"deepseek-r1": ready("deepseek-r1")})
    assert [v["name"] for v in out["spec"]["volumes"]] == ["dshm", "kube-api-access-7x2kq", "mc-deepseek-r1"]
    assert "initContainers" not in out["spec"]
    assert "lifecycle" not in out["spec"]["containers"][0]
    assert out["spec"]["containers"][0]["volumeMounts"][-1]["name"] == "mc-deepseek-r1"
    assert decision.warnings == []  # no memory warning without prewarm


def test_prewarm_off_in_the_spec_still_waits_with_tools() -> None:
    cache = downloading("tiny", prewarm={"mode": "off"})
    _, out = admit(bare_pod(), {"tiny": cache})
    assert [v["name"] for v in out["spec"]["volumes"]] == ["mc-tiny", "modelcache-tools"]
    assert [i["name"] for i in out["spec"]["initContainers"]] == ["modelcache-tools", "modelcache-wait-tiny"]
    assert "lifecycle" not in out["spec"]["containers"][0]
    assert [m["name"] for m in out["spec"]["containers"][0]["volumeMounts"]] == ["mc-tiny"]


def test_init_container_mode_warms_before_the_server_and_user_init_containers() -> None:
    caches: dict[str, CacheView | None] = {
        "qwen3-coder": downloading("qwen3-coder", prewarm={"mode": "initContainer", "concurrency": 12}),
        "draft": ready("draft", SHA_C, size=GIB, prewarm={"mode": "initContainer", "timeoutSeconds": 1200}),
    }
    decision, out = admit(deployment_pod("qwen3-coder,draft"), caches)
    assert [i["name"] for i in out["spec"]["initContainers"]] == [
        "modelcache-tools",
        "modelcache-wait-qwen3-coder",
        "modelcache-prewarm",
        "fetch-lora",
    ]
    warm = out["spec"]["initContainers"][2]
    assert warm["command"] == [
        "python3",
        "-I",
        "-S",
        "/opt/modelcache/prewarm.py",
        "warm",
        "--dir",
        "/models/qwen3-coder",
        "--dir",
        "/models/draft",
        "--concurrency",
        "12",
        "--timeout",
        "1200",
    ]
    assert warm["volumeMounts"] == [
        {"name": "mc-qwen3-coder", "mountPath": "/models/qwen3-coder", "readOnly": True,
         "subPath": folder(SHA_B)},
        {"name": "mc-draft", "mountPath": "/models/draft", "readOnly": True, "subPath": folder(SHA_C)},
        {"name": "modelcache-tools", "mountPath": "/opt/modelcache", "readOnly": True},
    ]
    # The serving container's cpu/memory, never its GPUs: page cache is charged to the reading cgroup.
    assert warm["resources"] == {"limits": {"memory": "96Gi"}, "requests": {"cpu": "8", "memory": "64Gi"}}
    assert warm["image"] == IMAGE
    vllm = out["spec"]["containers"][0]
    assert "lifecycle" not in vllm
    assert [m["name"] for m in vllm["volumeMounts"]] == [
        "kube-api-access-7x2kq",
        "mc-qwen3-coder",
        "mc-draft",
    ]
    assert "modelcache-prewarm-log" not in [v["name"] for v in out["spec"]["volumes"]]
    assert decision.warnings == []


def test_mixed_prewarm_modes_use_both_paths() -> None:
    caches: dict[str, CacheView | None] = {
        "a": ready("a", size=GIB),
        "b": ready("b", SHA_C, size=GIB, prewarm={"mode": "initContainer"}),
    }
    _, out = admit(statefulset_pod("a,b"), caches)
    assert [i["name"] for i in out["spec"]["initContainers"]] == ["modelcache-tools", "modelcache-prewarm"]
    assert out["spec"]["initContainers"][1]["command"][5:7] == ["--dir", "/models/b"]
    assert out["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"]["command"][5:] == ["/models/a"]


# ----- warnings -----


def test_memory_limit_below_model_plus_overhead_is_warned_in_human_units() -> None:
    pod = statefulset_pod()
    pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = "700Gi"
    decision, _ = admit(pod, {"deepseek-r1": ready("deepseek-r1", size=680 * GIB)})
    assert decision.warnings == [
        'container "sglang" memory limit 700Gi (700.0 GiB) is below the prewarmed model size 680.0 GiB '
        "(deepseek-r1) + 68.0 GiB overhead = 748.0 GiB; the warmed page cache will be reclaimed. Raise "
        "resources.limits.memory or set spec.prewarm.mode: off"
    ]


def test_memory_limit_above_model_plus_overhead_is_quiet() -> None:
    pod = statefulset_pod()
    pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = "748Gi"
    decision, _ = admit(pod, {"deepseek-r1": ready("deepseek-r1", size=680 * GIB)})
    assert decision.warnings == []


def test_no_memory_limit_and_unknown_size_still_warns() -> None:
    status = ModelCacheStatus(phase="Ready", resolvedRevision=SHA_A, revisionPath=folder(SHA_A), pvcName="p")
    decision, _ = admit(bare_pod(), {"tiny": CacheView(name="tiny", spec=spec(), status=status)})
    assert decision.warnings == [
        'container "app" has no memory limit while prewarm is on for tiny; set '
        "resources.limits.memory above model size + server overhead + slack"
    ]


def test_overhead_is_configurable() -> None:
    settings = InjectionSettings(
        operator_image=IMAGE,
        poststart_command=fake_poststart,
        wait_command=fake_wait,
        install_command=fake_install,
        memory_overhead_min_bytes=0,
        memory_overhead_fraction=0.0,
    )
    pod = bare_pod()
    pod["spec"]["containers"][0]["resources"] = {"limits": {"memory": "1Gi"}}
    decision, _ = admit(pod, {"tiny": ready("tiny", size=GIB)}, settings)
    assert decision.warnings == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "$(MODEL_DIR)", "--load-format", "dummy"], ["--load-format dummy"]),
        (["serve", "$(MODEL_DIR)", "--load_format=dummy"], ["--load-format dummy"]),
        (["serve", "$(MODEL_DIR)", "--load-format", "safetensors"], []),
        (["serve", "--load-format"], []),
    ],
)
def test_vllm_dummy_load_format_is_flagged(args: list[str], expected: list[str]) -> None:
    container = {"name": "vllm", "args": args}
    assert [text for _, text in engine_flag_hits(container, prewarm_on=False)] == expected


def test_engine_flags_inside_a_shell_string_are_found_and_reported() -> None:
    pod = statefulset_pod()
    pod["spec"]["containers"][0]["command"] = [
        "sh",
        "-c",
        "python3 -m sglang.launch_server --model-path $MODEL_DIR --tp 8 "
        "--weight-loader-drop-cache-after-load --load-format=dummy",
    ]
    decision, _ = admit(pod, {"deepseek-r1": ready("deepseek-r1")})
    assert decision.warnings == [
        'container "sglang" runs with --weight-loader-drop-cache-after-load, which drops the page cache '
        "of every "
        "checkpoint file after loading, undoing prewarm",
        'container "sglang" runs with --load-format dummy, which initialises random weights and never '
        "reads the "
        "model files, so the cache is unused",
    ]

    off = statefulset_pod(**{ANN_PREWARM: "off"})
    off["spec"]["containers"][0]["command"] = pod["spec"]["containers"][0]["command"]
    decision, _ = admit(off, {"deepseek-r1": ready("deepseek-r1")})
    assert decision.warnings == [
        'container "sglang" runs with --load-format dummy, which initialises random weights and never '
        "reads the "
        "model files, so the cache is unused"
    ]


def test_unbalanced_quotes_in_a_command_do_not_break_flag_detection() -> None:
    container = {"name": "x", "command": ["sh", "-c", "exec server 'oops --load-format dummy"]}
    assert [t for _, t in engine_flag_hits(container, prewarm_on=True)] == ["--load-format dummy"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("800Gi", 800 * GIB),
        ("1.5G", 1_500_000_000),
        ("129e6", 129_000_000),
        ("512Mi", 512 << 20),
        ("1Ti", 1 << 40),
        ("100m", 1),
        ("64", 64),
        (" 2Ki ", 2048),
        ("bogus", None),
        ("1Gb", None),
        ("", None),
    ],
)
def test_parse_quantity(text: str, expected: int | None) -> None:
    assert parse_quantity(text) == expected


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (12, 1536, 3 << 20, 748 * GIB, 2 << 40)] == [
        "12 B",
        "1.5 KiB",
        "3.0 MiB",
        "748.0 GiB",
        "2.0 TiB",
    ]


# ----- defaults use the real prewarm hook -----


def test_default_settings_use_the_prewarm_hook_commands() -> None:
    settings = InjectionSettings(operator_image=IMAGE)
    _, out = admit(bare_pod(), {"tiny": downloading("tiny")}, settings)
    tools, wait = out["spec"]["initContainers"]
    assert tools["command"] == hook.install_command("/opt/modelcache")
    assert wait["command"] == hook.wait_command("/opt/modelcache", f"/models/tiny/all/{SHA_B}", 21600)
    assert out["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"][
        "command"
    ] == hook.poststart_command(
        "/opt/modelcache", ["/models/tiny"], 8, 900, "/var/log/modelcache/prewarm-app.log"
    )


def test_injected_init_containers_take_the_charts_image_settings_and_the_pods_pull_secrets() -> None:
    """The kubelet pulls them with the pod's own imagePullSecrets, which the webhook leaves as they are."""
    pod = statefulset_pod()
    pod["spec"]["imagePullSecrets"] = [{"name": "team-registry"}]
    settings = dataclasses.replace(SETTINGS, image_pull_policy="Always")
    _, out = admit(pod, {"deepseek-r1": ready("deepseek-r1", pvc="deepseek-r1")}, settings)
    assert {(c["image"], c["imagePullPolicy"]) for c in out["spec"]["initContainers"]} == {(IMAGE, "Always")}
    assert out["spec"]["imagePullSecrets"] == [{"name": "team-registry"}]
