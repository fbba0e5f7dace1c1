from __future__ import annotations

from pathlib import Path

import pytest

from modelcache_operator.downloader.errors import (
    NON_RETRYABLE_EXIT_CODES,
    ExitCode,
    InsufficientSpace,
    UnsafeFileName,
)
from modelcache_operator.downloader.plan import RemoteFile, check_safe_path, check_space, filter_files

FILES = [RemoteFile(p, 1) for p in ("config.json", "model-00001.safetensors", "model-00002.safetensors",
                                    "tokenizer.json", "onnx/model.onnx", "1_Pooling/config.json")]


def paths(allow: list[str] | None, ignore: list[str] | None) -> set[str]:
    return {f.path for f in filter_files(FILES, allow, ignore)}


def test_no_patterns_keeps_everything() -> None:
    assert paths(None, None) == {f.path for f in FILES}
    assert paths([], []) == {f.path for f in FILES}


def test_allow_then_ignore_like_huggingface_hub() -> None:
    assert paths(["*.json"], None) == {"config.json", "tokenizer.json", "1_Pooling/config.json"}
    assert paths(["*.json"], ["tokenizer*"]) == {"config.json", "1_Pooling/config.json"}
    assert paths(None, ["onnx/"]) == {f.path for f in FILES} - {"onnx/model.onnx"}  # trailing / = directory
    assert paths(["model-0000[1]*"], None) == {"model-00001.safetensors"}


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a\\b", "a\x00b", "", "a//b", "./a",
                                  ".modelcache/manifest.json"])
def test_unsafe_names(name: str) -> None:
    with pytest.raises(UnsafeFileName):
        check_safe_path(name)


@pytest.mark.parametrize("name", ["config.json", "1_Pooling/config.json", "a..b/c.txt", ".gitattributes",
                                  "x/.modelcache/y"])
def test_safe_names(name: str) -> None:
    check_safe_path(name)


def test_space_check_message() -> None:
    check_space(100, 100, Path("/v"))
    with pytest.raises(InsufficientSpace, match=r"needs 2.0 GiB .* has 1.0 GiB"):
        check_space(2 << 30, 1 << 30, Path("/v"))


def test_exit_codes_for_pod_failure_policy() -> None:
    assert tuple(range(10, 20)) == NON_RETRYABLE_EXIT_CODES
    assert ExitCode.NETWORK not in NON_RETRYABLE_EXIT_CODES
    assert all(c in NON_RETRYABLE_EXIT_CODES for c in (10, 11, 12, 13, 14, 15))
