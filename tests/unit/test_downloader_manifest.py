from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelcache_operator.downloader.httpfetch import download, make_connections
from modelcache_operator.downloader.manifest import (
    Manifest,
    ManifestFile,
    ManifestInvalid,
    ManifestSource,
    ModelInfo,
    detect_format,
    load_manifest,
    model_info,
    verify_manifest,
    write_manifest,
)
from modelcache_operator.downloader.sequential import SequentialFile
from tests.hubs.huggingface import HuggingFaceHub


def test_detect_format() -> None:
    assert detect_format(["config.json", "model.safetensors", "pytorch_model.bin"]) == "safetensors"
    assert detect_format(["q/model-Q4_K_M.gguf"]) == "gguf"
    assert detect_format(["pytorch_model.bin"]) == "pytorch"
    assert detect_format(["README.md"]) == "unknown"


def test_model_info_from_config() -> None:
    cfg = {"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16",
           "quantization_config": {"quant_method": "fp8"}}
    assert model_info(cfg) == ModelInfo(architecture="LlamaForCausalLM", dtype="bfloat16", quantization="fp8")
    bert = model_info({"model_type": "bert", "dtype": "float32"})
    assert bert == ModelInfo(architecture="bert", dtype="float32")
    assert model_info(None, ["Qwen3-8B-Q4_K_M.gguf"]).quantization == "Q4_K_M"
    assert model_info(None) == ModelInfo()


def make(tmp: Path) -> Manifest:
    (tmp / "a").mkdir()
    (tmp / "a" / "w.bin").write_bytes(b"x" * 10)
    return Manifest(source=ManifestSource(hub="huggingface", repo="o/m", requestedRevision="main"),
                    revision="f" * 40, files=[ManifestFile(path="a/w.bin", size=10,
                                                           sha256=hashlib.sha256(b"x" * 10).hexdigest())],
                    totalBytes=10, fileCount=1, format="pytorch", model=ModelInfo(),
                    createdAt="2026-01-01T00:00:00Z")


def test_write_load_verify(tmp_path: Path) -> None:
    m = make(tmp_path)
    path = write_manifest(tmp_path, m)
    assert path == tmp_path / ".modelcache" / "manifest.json"
    assert load_manifest(path) == m == load_manifest(tmp_path)
    assert verify_manifest(tmp_path) == m
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temp file left
    (tmp_path / "a" / "w.bin").write_bytes(b"short")
    with pytest.raises(ManifestInvalid, match=r"a/w\.bin: 5 bytes, expected 10"):
        verify_manifest(tmp_path)
    (tmp_path / "a" / "w.bin").unlink()
    (tmp_path / "a" / "w.bin").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ManifestInvalid, match="not a regular file"):
        verify_manifest(tmp_path)


@pytest.mark.parametrize("ignore_range", [False, True])
def test_download_resumes_and_hashes_the_whole_file(tmp_path: Path, ignore_range: bool) -> None:
    body = bytes(range(256)) * (24 << 10)  # 6 MiB: more than one read buffer
    hub = HuggingFaceHub()
    sha = hub.add_repo("org/m", {"w.bin": body})
    hub.faults.ignore_range = ignore_range
    dest = tmp_path / "w.bin"
    prefix = body[:12] if not ignore_range else b"STALE-PREFIX"  # a server ignoring Range replaces it all
    dest.write_bytes(prefix)
    counted: list[int] = []
    with hub, SequentialFile(dest, len(body), counted.append) as out:
        assert out.start == len(prefix)  # continued by appending, not rewritten
        download(make_connections(), f"{hub.url}/org/m/resolve/{sha}/w.bin", out, headers={}, auth={},
                 on_bytes=counted.append, timeout=10, what="w.bin")
    assert dest.read_bytes() == body
    assert out.digest.hexdigest() == hashlib.sha256(body).hexdigest()
    # The prefix was counted before; progress must end at the file's real size.
    assert len(prefix) + sum(counted) == len(body)
    assert hub.bytes_served["w.bin"] == len(body) - (0 if ignore_range else len(prefix))
