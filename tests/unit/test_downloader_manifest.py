from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from modelcache_operator.downloader.hashing import HashingWriter
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
    with pytest.raises(ManifestInvalid, match=r"a/w\.bin: size 5"):
        verify_manifest(tmp_path)
    (tmp_path / "a" / "w.bin").unlink()
    (tmp_path / "a" / "w.bin").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ManifestInvalid, match="not a regular file"):
        verify_manifest(tmp_path)


def test_hashing_writer_restarts_hash_when_the_server_ignores_range() -> None:
    buf = io.BytesIO(b"HEAD")
    buf.seek(4)
    counted: list[int] = []
    digest = hashlib.sha256(b"HEAD")
    w = HashingWriter(buf, digest, counted.append)
    w.write(b"-tail")
    assert w.digest.hexdigest() == hashlib.sha256(b"HEAD-tail").hexdigest()
    # http_get's fallback: rewind to where the resumed download began, truncate, write the whole body.
    w.seek(w.tell() - 9)
    w.truncate()
    w.write(b"WHOLE")
    assert buf.getvalue() == b"WHOLE"
    assert w.digest.hexdigest() == hashlib.sha256(b"WHOLE").hexdigest()
    # The 4 resumed bytes were counted before; progress must end at the file's real size.
    assert 4 + sum(counted) == len(buf.getvalue())
