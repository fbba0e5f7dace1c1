"""builders/ossfs_options.py: format- and TP-aware ossfs 2.0 options; the admin's options always win."""

from __future__ import annotations

from typing import Any

import pytest

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.builders import storage
from modelcache_operator.builders.ossfs_options import ServingHints, format_hint, option_names, ossfs_options


@pytest.mark.parametrize(("text", "names"), [
    (None, set()),
    ("-o memory_data_cache_size=16g", {"memory_data_cache_size"}),
    ("-o a=1,b -o c=2", {"a", "b", "c"}),
    ("-oprefetch_chunks=8 -f", {"prefetch_chunks"}),
    ("-o 'a=x y'", {"a"}),
])
def test_option_names(text: str | None, names: set[str]) -> None:
    assert option_names(text) == names


def test_gguf_gets_prefetch_chunks_and_a_memory_warning() -> None:
    out = ossfs_options(None, ServingHints("gguf", weight_files=4), None)
    assert out.text == "-o prefetch_chunks=-1"
    assert out.derived == ("prefetch_chunks=-1",)
    assert out.warnings == ("ossfs2 -o prefetch_chunks=-1 for GGUF costs about 6.0 GiB (4 files x 1.5 GiB) of "
                            "node memory per mount",)
    assert ossfs_options(None, ServingHints("safetensors"), None).text == ""


def test_tensor_parallel_gets_the_stores_memory_cache_only_where_the_store_allows_it() -> None:
    out = ossfs_options("-o allow_other", ServingHints("safetensors", tensor_parallel=4), "16g")
    assert out.text == "-o allow_other -o memory_data_cache_size=16g" and out.warnings == ()
    out = ossfs_options(None, ServingHints("safetensors", tensor_parallel=4), None)
    assert out.text == "" and "memoryDataCacheSize is not set" in out.warnings[0]
    assert ossfs_options(None, ServingHints(None, tensor_parallel=1), "16g").text == ""


def test_the_admins_options_always_win() -> None:
    admin = "-o prefetch_chunks=16,memory_data_cache_size=2g"
    out = ossfs_options(admin, ServingHints("gguf", tensor_parallel=8, weight_files=2), "64g")
    assert out.text == admin and out.derived == () and out.warnings == ()


def _cache(source: dict[str, Any], tp: int | None = None) -> api.ModelCacheSpec:
    serving = {} if tp is None else {"tensorParallelSize": tp}
    return api.ModelCacheSpec.model_validate({"source": source, "serving": serving})


def test_format_hint_from_the_repo_and_the_filters() -> None:
    assert format_hint(_cache({"huggingface": {"repo": "TheBloke/Llama-2-7B-GGUF"}})) == "gguf"
    assert format_hint(_cache({"huggingface": {"repo": "Qwen/Qwen2.5-7B",
                                               "allowPatterns": ["*Q4_K_M.gguf", "*.json"]}})) == "gguf"
    assert format_hint(_cache({"huggingface": {"repo": "Qwen/Qwen2.5-7B",
                                               "allowPatterns": ["*.gguf", "*.safetensors"]}})) is None
    assert format_hint(_cache({"modelscope": {"model": "qwen/Qwen2.5-7B"}})) is None


def _ossfs_store(**ossfs: Any) -> api.ModelStoreSpec:
    return api.ModelStoreSpec.model_validate({"namespaceSelector": {}, "ossfs2": {
        "bucket": "models", "url": "https://oss-cn-hangzhou-internal.aliyuncs.com", "authType": "rrsa",
        "roleName": "r", **ossfs}})


def test_the_served_pv_carries_the_derived_options() -> None:
    store = _ossfs_store(otherOpts="-o allow_other", memoryDataCacheSize="32g")
    hints = ServingHints("gguf", tensor_parallel=2)
    pv = storage.persistent_volume("pv", store, "hf/x", read_only=True, claim=("ns", "c"), labels={},
                                   operator_namespace="op", hints=hints)
    opts = pv["spec"]["csi"]["volumeAttributes"]["otherOpts"]
    assert opts == "-o allow_other -o prefetch_chunks=-1 -o memory_data_cache_size=32g"
    # Writer volumes (no hints) keep exactly the admin's options.
    pv = storage.persistent_volume("pv", store, "", read_only=False, claim=("ns", "c"), labels={},
                                   operator_namespace="op")
    assert pv["spec"]["csi"]["volumeAttributes"]["otherOpts"] == "-o allow_other"


def test_memory_data_cache_size_is_validated() -> None:
    with pytest.raises(ValueError, match="memoryDataCacheSize"):
        _ossfs_store(memoryDataCacheSize="16g; rm -rf /")
