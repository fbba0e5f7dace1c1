"""The compile cache: the key of a pod's folder (GPU product from its node selection, engine and version
from its image), what admission adds, and the init container's folder preparation and LRU eviction on
real files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from modelcache_operator.api.names import ANN_CACHES, LABEL_INJECT
from modelcache_operator.api.v1alpha2 import ModelCacheSpec, ModelCacheStatus
from modelcache_operator.builders.compile_cache import (
    STAMP,
    Engine,
    Entry,
    engine_of,
    eviction_plan,
    folder_job,
    folder_job_name,
    gpu_key,
    key_folder,
)
from modelcache_operator.cli import main as cli
from modelcache_operator.compilecache.prepare import entries, prepare
from modelcache_operator.webhook.injection import InjectionSettings
from modelcache_operator.webhook.patch import mutate_pod
from modelcache_operator.webhook.pinning import CacheView

SHA = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
H100, A100 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"
SETTINGS = InjectionSettings(operator_image="ghcr.io/example/modelcache-operator:0.1.0")


def ready(compile_cache: bool = True, root_owned: bool = False) -> CacheView:
    status: dict[str, Any] = {"phase": "Ready", "pvcName": "modelcache-qwen", "resolvedRevision": SHA,
                              "revisionPath": f"all/{SHA}"}
    if compile_cache:
        status["compileCache"] = {"pvcName": "modelcache-compile-nfs", "sizeLimit": "10Gi", "rootOwned": root_owned}
    spec = ModelCacheSpec.model_validate({"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}})
    return CacheView("qwen", spec, ModelCacheStatus.model_validate(status))


def pod(image: str = "vllm/vllm-openai:v0.9.1", node_selector: dict[str, str] | None = None,
        affinity: dict[str, Any] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "vllm", "image": image,
                                            "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    if affinity is not None:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": affinity}}
    return {"metadata": {"name": "p", "labels": {LABEL_INJECT: "true"},
                         "annotations": {ANN_CACHES: "qwen", **(annotations or {})}}, "spec": spec}


def admit(p: dict[str, Any], cache: CacheView | None = None) -> tuple[dict[str, Any], list[str]]:
    decision = mutate_pod(p, {"qwen": cache or ready()}, SETTINGS, namespace="team")
    assert decision.allowed, decision.message
    return jsonpatch.apply_patch(p, decision.patch), decision.warnings


def compile_mount(out: dict[str, Any]) -> dict[str, Any] | None:
    mounts = out["spec"]["containers"][0].get("volumeMounts") or []
    return next((m for m in mounts if m["name"] == "mc-compile-cache"), None)


def by_product(product: str) -> dict[str, str]:
    return {"nvidia.com/gpu.product": product}


def test_two_gpu_products_get_two_folders_and_the_engine_variables() -> None:
    h100, _ = admit(pod(node_selector=by_product(H100)))
    a100, _ = admit(pod(node_selector=by_product(A100)))
    assert compile_mount(h100) == {"name": "mc-compile-cache", "mountPath": "/var/cache/modelcache-compile",
                                   "subPath": f"{H100}/vllm-v0.9.1"}
    assert compile_mount(a100) == {"name": "mc-compile-cache", "mountPath": "/var/cache/modelcache-compile",
                                   "subPath": f"{A100}/vllm-v0.9.1"}
    volume = next(v for v in h100["spec"]["volumes"] if v["name"] == "mc-compile-cache")
    assert volume["persistentVolumeClaim"] == {"claimName": "modelcache-compile-nfs"}  # writable
    env = {e["name"]: e["value"] for e in h100["spec"]["containers"][0]["env"]}
    assert env["VLLM_CACHE_ROOT"] == "/var/cache/modelcache-compile/vllm"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/var/cache/modelcache-compile/inductor"
    assert env["TRITON_CACHE_DIR"] == "/var/cache/modelcache-compile/triton"
    init = next(c for c in h100["spec"]["initContainers"] if c["name"] == "modelcache-compile-cache")
    assert init["command"] == ["modelcache-operator", "compile-cache", "--root", "/modelcache-compile", "--key",
                               f"{H100}/vllm-v0.9.1", "--limit-bytes", str(10 << 30), "--subdir", "vllm",
                               "--subdir", "inductor", "--subdir", "triton"]
    assert init["volumeMounts"] == [{"name": "mc-compile-cache", "mountPath": "/modelcache-compile"}]
    assert init["securityContext"]["runAsNonRoot"] is True
    # The model stays read-only beside it.
    model = next(m for m in h100["spec"]["containers"][0]["volumeMounts"] if m["name"] == "mc-qwen")
    assert model["readOnly"] is True


def test_sglang_gets_its_own_variables_and_a_required_affinity_pins_the_product() -> None:
    affinity = {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": [H100]}]}]}
    out, _ = admit(pod("lmsysorg/sglang:v0.4.6.post1-cu124", affinity=affinity))
    assert compile_mount(out)["subPath"] == f"{H100}/sglang-v0.4.6.post1-cu124"  # type: ignore[index]
    env = {e["name"] for e in out["spec"]["containers"][0]["env"]}
    assert {"TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "FLASHINFER_WORKSPACE_BASE", "SGLANG_DG_CACHE_DIR"} <= env
    assert "VLLM_CACHE_ROOT" not in env


def test_a_pod_that_may_land_on_several_products_gets_no_compile_cache_and_a_warning() -> None:
    affinity = {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": [H100, A100]}]}]}
    for unpinned in (pod(), pod(affinity=affinity)):
        out, warnings = admit(unpinned)
        assert compile_mount(out) is None
        assert any("may run on more than one GPU product" in w for w in warnings), warnings


@pytest.mark.parametrize("image", ["vllm/vllm-openai", "vllm/vllm-openai:latest", "nginx:1.27"])
def test_an_unversioned_or_unknown_engine_image_gets_no_compile_cache(image: str) -> None:
    out, warnings = admit(pod(image, node_selector=by_product(H100)))
    assert compile_mount(out) is None
    assert any("is not a versioned vLLM or SGLang image" in w for w in warnings), warnings


def test_the_engine_annotation_names_the_engine_of_a_custom_image_and_a_bad_one_is_denied() -> None:
    out, _ = admit(pod("registry.example/team/server:7", node_selector=by_product(H100),
                       annotations={"modelcache.dev/engine": "vllm:0.9.1"}))
    assert compile_mount(out)["subPath"] == f"{H100}/vllm-0.9.1"  # type: ignore[index]
    bad = pod(node_selector=by_product(H100), annotations={"modelcache.dev/engine": "tensorrt:1"})
    decision = mutate_pod(bad, {"qwen": ready()}, SETTINGS, namespace="team")
    assert not decision.allowed and decision.message is not None and "modelcache.dev/engine" in decision.message


def test_no_compile_cache_without_the_store_opt_in_or_with_the_pod_opt_out() -> None:
    out, warnings = admit(pod(node_selector=by_product(H100)), ready(compile_cache=False))
    assert compile_mount(out) is None and not any("compile" in w for w in warnings)
    out, _ = admit(pod(node_selector=by_product(H100), annotations={"modelcache.dev/compile-cache": "off"}))
    assert compile_mount(out) is None


def test_a_host_path_store_runs_the_init_container_as_the_folder_owner_without_capabilities() -> None:
    out, _ = admit(pod(node_selector=by_product(H100)), ready(root_owned=True))
    init = next(c for c in out["spec"]["initContainers"] if c["name"] == "modelcache-compile-cache")
    context = init["securityContext"]
    assert (context["runAsUser"], context["runAsNonRoot"], context["capabilities"]) == (0, False, {"drop": ["ALL"]})


def test_readmission_adds_nothing() -> None:
    out, _ = admit(pod(node_selector=by_product(H100)))
    assert mutate_pod(out, {"qwen": ready()}, SETTINGS, namespace="team").patch == []


@pytest.mark.parametrize(("image", "engine"), [
    ("vllm/vllm-openai:v0.9.1", Engine("vllm", "v0.9.1")),
    ("docker.io/vllm/vllm-openai@sha256:" + "ab" * 32, Engine("vllm", "sha256-" + "ab" * 8)),
    ("registry:5000/lmsysorg/sglang:v0.4.6", Engine("sglang", "v0.4.6")),
    ("registry:5000/vllm", None),
])
def test_engine_of_reads_the_repository_and_tag(image: str, engine: Engine | None) -> None:
    assert engine_of(image) == engine


def test_gpu_key_prefers_the_product_and_falls_back_to_the_family() -> None:
    assert gpu_key({"nodeSelector": by_product(H100)}) == ("nvidia.com/gpu.product", H100)
    assert gpu_key({"nodeSelector": {"nvidia.com/gpu.family": "hopper"}}) == ("nvidia.com/gpu.family", "hopper")
    # Terms are ORed: one term without the label leaves the product open.
    open_term = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                                                     "values": [H100]}]},
                              {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}
    assert gpu_key(open_term) is None
    assert key_folder("weird/../name", Engine("vllm", "v1")) == "weird_.._name/vllm-v1"


def test_eviction_is_least_recently_used_first_and_never_the_starting_folder() -> None:
    found = [Entry("h100/vllm-a", 40, 1.0), Entry("a100/vllm-a", 30, 2.0), Entry("h100/vllm-b", 50, 3.0)]
    assert eviction_plan(found, 100, keep="h100/vllm-b") == ["h100/vllm-a"]
    assert eviction_plan(found, 60, keep="h100/vllm-a") == ["a100/vllm-a", "h100/vllm-b"]
    assert eviction_plan(found, 200, keep="x") == []


def write(path: Path, size: int, used: float | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "kernel.bin").write_bytes(b"x" * size)
    if used is not None:
        (path / STAMP).touch()
        os.utime(path / STAMP, (used, used))


def test_prepare_creates_the_folder_and_evicts_over_the_cap_on_real_files(tmp_path: Path) -> None:
    write(tmp_path / "h100" / "vllm-old", 4000, used=1_000.0)
    write(tmp_path / "a100" / "vllm-mid", 3000, used=2_000.0)
    evicted = prepare(tmp_path, "h100/vllm-new", ["vllm", "triton"], limit_bytes=3500)
    assert evicted == ["h100/vllm-old"]
    assert not (tmp_path / "h100" / "vllm-old").exists() and (tmp_path / "a100" / "vllm-mid").exists()
    new = tmp_path / "h100" / "vllm-new"
    assert (new / "vllm").is_dir() and (new / "triton").is_dir()
    assert (new / "triton").stat().st_mode & 0o777 == 0o777
    assert {e.folder for e in entries(tmp_path)} == {"a100/vllm-mid", "h100/vllm-new"}
    assert not list(tmp_path.glob(".evicting-*"))


def test_the_cli_refuses_a_key_that_leaves_the_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["compile-cache", "--root", str(tmp_path), "--key", "../x", "--limit-bytes", "1"]) == 2
    assert "is not <gpu>/<engine>-<version>" in capsys.readouterr().err
    assert cli(["compile-cache", "--root", str(tmp_path), "--key", "h100/vllm-1", "--limit-bytes", "1"]) == 0
    assert (tmp_path / "h100" / "vllm-1" / STAMP).exists()


def test_the_folder_job_creates_only_the_namespace_folder_as_the_downloads_user() -> None:
    store = {"apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelStore",
             "metadata": {"name": "nfs", "uid": "u-1"}}
    job = folder_job(store, "team-a", "modelcache-store-nfs", "img:1", "modelcache-system")
    assert job["metadata"]["name"] == folder_job_name("team-a", "nfs") != folder_job_name("team-b", "nfs")
    assert job["metadata"]["namespace"] == "modelcache-system"
    assert job["metadata"]["labels"]["modelcache.dev/role"] == "compile-folder"
    assert job["metadata"]["labels"]["modelcache.dev/cache-namespace"] == "team-a"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["test", "-w", "/compile"]
    assert container["volumeMounts"] == [{"name": "store", "mountPath": "/compile", "subPath": "compile/team-a"}]
    assert pod["volumes"] == [{"name": "store", "persistentVolumeClaim": {"claimName": "modelcache-store-nfs"}}]
    assert pod["securityContext"]["runAsUser"] == 65532 and container["securityContext"]["runAsNonRoot"] is True
