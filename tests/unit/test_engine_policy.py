"""webhook/engines.py: which engine a container runs, its tensor parallelism, and the engine- and
filesystem-aware prewarm policy, alone and through mutate_pod."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.names import ANN_PREWARM_SKIPPED
from modelcache_operator.webhook.engines import (
    CacheMedium,
    engine_of,
    engine_warnings,
    prewarm_policy,
    tensor_parallel_size,
)
from modelcache_operator.webhook.pinning import CacheView
from tests.unit.test_webhook_patch import SETTINGS, admit, bare_pod, ready

GIB = 1 << 30
VLLM = {"name": "app", "command": ["vllm", "serve", "/models/tiny", "--tensor-parallel-size", "4"]}
SGLANG = {"name": "app", "command": ["sh", "-c", "python3 -m sglang.launch_server --model /m --tp-size=2"]}


@pytest.mark.parametrize(("container", "engine", "tp"), [
    (VLLM, "vllm", 4),
    ({"command": ["python3", "-m", "vllm.entrypoints.openai.api_server"], "args": ["-tp", "8"]}, "vllm", 8),
    ({"command": ["/usr/local/bin/vllm", "serve", "m"]}, "vllm", 1),
    (SGLANG, "sglang", 2),
    ({"command": ["python3", "-m", "http.server"]}, None, 1),
    ({"command": ["vllm-like-tool", "--tp", "lots"]}, None, 1),
])
def test_engine_and_tensor_parallelism_from_the_command_line(container: dict[str, Any], engine: str | None,
                                                             tp: int) -> None:
    assert engine_of(container) == engine
    assert tensor_parallel_size(container) == tp


NFS = CacheMedium("tiny", "nfs", size_bytes=10 * GIB)


def test_vllm_on_nfs_that_fits_in_memory_skips_the_hook() -> None:
    policy = prewarm_policy(VLLM | {"name": "app"}, [NFS], 64 * GIB, hook_on=True)
    assert policy.skip_reason == "vllm-prefetches-nfs"
    assert any("prefetches" in w for w in policy.warnings)
    # Too big for the container's memory: vLLM will not prefetch, so the hook stays.
    assert prewarm_policy(VLLM, [NFS], 8 * GIB, hook_on=True).skip_reason is None
    # Another engine, another filesystem, or an unknown size: the hook stays.
    assert prewarm_policy(SGLANG, [NFS], None, hook_on=True).skip_reason is None
    assert prewarm_policy(VLLM, [replace(NFS, backend="hostPath")], None, hook_on=True).skip_reason is None
    assert prewarm_policy(VLLM, [replace(NFS, size_bytes=None)], None, hook_on=True).skip_reason is None
    assert prewarm_policy(VLLM, [NFS], None, hook_on=False).skip_reason is None


def test_tensor_parallel_on_ossfs2_without_a_memory_cache_warns() -> None:
    oss = CacheMedium("tiny", "ossfs2", "-o allow_other", 10 * GIB)
    [warning] = prewarm_policy(VLLM, [oss], None, hook_on=True).warnings
    assert "4 tensor-parallel ranks" in warning and "memory_data_cache_size" in warning
    shared = replace(oss, mount_options="-o memory_data_cache_size=16g")
    assert prewarm_policy(VLLM, [shared], None, hook_on=True).warnings == ()
    assert prewarm_policy({"name": "app", "command": ["vllm", "serve"]}, [oss], None, hook_on=True).warnings == ()


def test_drop_cache_after_load_warns_while_prewarm_is_on() -> None:
    container = {"name": "app", "command": ["python3", "-m", "sglang.launch_server",
                                            "--weight-loader-drop-cache-after-load"]}
    [warning] = engine_warnings(container, prewarm_on=True)
    assert "undoing prewarm" in warning
    assert engine_warnings(container, prewarm_on=False) == []


def _store(**backend: Any) -> api.ModelStoreSpec:
    return api.ModelStoreSpec.model_validate({"namespaceSelector": {}, **backend})


def _on(view: CacheView, store: str) -> CacheView:
    assert view.status is not None
    return replace(view, status=view.status.model_copy(update={"store": store}))


STORES = {
    "nfs": _store(nfs={"server": "10.0.0.2", "path": "/export/models"}),
    "oss": _store(ossfs2={"bucket": "models", "url": "https://oss-cn-hangzhou-internal.aliyuncs.com",
                          "authType": "rrsa", "roleName": "r"}),
}
WITH_STORES = replace(SETTINGS, store_lookup=STORES.get)


def _pod(container: dict[str, Any]) -> dict[str, Any]:
    pod = bare_pod()
    pod["spec"]["containers"] = [container | {"name": "app", "image": "vllm/vllm-openai"}]
    return pod


def test_admission_skips_the_hook_for_vllm_on_nfs_and_says_why() -> None:
    container = {"command": ["vllm", "serve", "/models/tiny"], "resources": {"limits": {"memory": "64Gi"}}}
    decision, out = admit(_pod(container), {"tiny": _on(ready("tiny", size=10 * GIB), "nfs")}, WITH_STORES)
    assert "lifecycle" not in out["spec"]["containers"][0]
    assert json.loads(out["metadata"]["annotations"][ANN_PREWARM_SKIPPED]) == {"app": "vllm-prefetches-nfs"}
    assert any("prewarm hook is skipped" in w for w in decision.warnings)
    # The same pod on an ossfs2 store keeps its hook.
    _, out = admit(_pod(container), {"tiny": _on(ready("tiny", size=10 * GIB), "oss")}, WITH_STORES)
    assert out["spec"]["containers"][0]["lifecycle"]["postStart"]
    assert ANN_PREWARM_SKIPPED not in out["metadata"]["annotations"]


def test_admission_warns_on_tp_over_ossfs2_without_memory_data_cache() -> None:
    container = {"command": ["vllm", "serve", "/models/tiny", "-tp", "2"], "resources": {"limits": {"memory": "2Ti"}}}
    decision, _ = admit(_pod(container), {"tiny": _on(ready("tiny", size=10 * GIB), "oss")}, WITH_STORES)
    assert any("2 tensor-parallel ranks" in w for w in decision.warnings), decision.warnings
