"""The manifest that publishes a revision folder: `<root>/<revision>/.modelcache/manifest.json`.

Readers trust a folder only when it has a manifest, and the downloader writes it last.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .plan import MANIFEST_NAME, manifest_path

ModelFormat = Literal["safetensors", "gguf", "pytorch", "unknown"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ManifestSource(_Strict):
    hub: Literal["huggingface", "modelscope"]
    repo: str
    requestedRevision: str
    endpoint: str | None = None


class ManifestFile(_Strict):
    path: str
    size: int
    sha256: str  # of the bytes on the volume
    verified: bool = True  # False: the hub gave no hash for it anywhere; its size was checked, not its content


class ModelInfo(_Strict):
    architecture: str | None = None
    dtype: str | None = None
    quantization: str | None = None


class Manifest(_Strict):
    schemaVersion: Literal[1] = 1
    source: ManifestSource
    revision: str
    files: list[ManifestFile]
    totalBytes: int
    fileCount: int
    format: ModelFormat
    model: ModelInfo
    createdAt: str


class ManifestInvalid(ValueError):
    """The folder's files do not match its manifest."""


def load_manifest(path: Path) -> Manifest:
    """Parse a manifest file (a path to manifest.json, or to the revision folder holding it)."""
    if path.is_dir():
        path = manifest_path(path)
    return Manifest.model_validate_json(path.read_bytes())


def size_problems(directory: Path, files: Iterable[tuple[str, int]]) -> list[str]:
    """One line per (path, size) that is not a regular file of that size under directory."""
    problems = []
    for path, size in files:
        p = directory / path
        if p.is_symlink() or not p.is_file():
            problems.append(f"{path}: missing or not a regular file")
        elif p.stat().st_size != size:
            problems.append(f"{path}: {p.stat().st_size} bytes, expected {size}")
    return problems


def verify_manifest(directory: Path) -> Manifest:
    """Check that every listed file is a regular file of the listed size; raise ManifestInvalid if not.

    Sizes only: hashing a multi-GB model on every start would cost a full read of the volume.
    """
    manifest = load_manifest(manifest_path(directory))
    problems = size_problems(directory, ((f.path, f.size) for f in manifest.files))
    total = sum(f.size for f in manifest.files)
    if manifest.fileCount != len(manifest.files) or manifest.totalBytes != total:
        problems.append("fileCount/totalBytes disagree with files")
    if problems:
        raise ManifestInvalid(f"{len(problems)} problem(s): " + "; ".join(problems[:10]))
    return manifest


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write manifest.json atomically: temp file in the same directory, fsync, os.replace, fsync the dir."""
    target = manifest_path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp")
    data = manifest.model_dump_json(indent=2).encode() + b"\n"
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some FUSE filesystems refuse fsync on directories; the replace is still done
    finally:
        os.close(dir_fd)
    return target


def detect_format(paths: Iterable[str]) -> ModelFormat:
    suffixes = {Path(p).suffix.lower() for p in paths}
    if ".safetensors" in suffixes:
        return "safetensors"
    if ".gguf" in suffixes:
        return "gguf"
    if suffixes & {".bin", ".pt", ".pth"}:
        return "pytorch"
    return "unknown"


_GGUF_QUANT = re.compile(r"(?:^|[-_.])((?:I?Q\d+_[A-Z0-9_]+|Q\d+_\d|F16|BF16|F32))(?:[-_.]|$)", re.IGNORECASE)


def model_info(config: dict[str, Any] | None, paths: Iterable[str] = ()) -> ModelInfo:
    """Architecture, dtype and quantization from a transformers config.json; GGUF quant from file names."""
    info = ModelInfo()
    if config:
        archs = config.get("architectures")
        if isinstance(archs, list) and archs and isinstance(archs[0], str):
            info.architecture = archs[0]
        elif isinstance(config.get("model_type"), str):
            info.architecture = config["model_type"]
        dtype = config.get("torch_dtype", config.get("dtype"))
        if isinstance(dtype, str):
            info.dtype = dtype
        quant = config.get("quantization_config")
        if isinstance(quant, dict):
            method = quant.get("quant_method")
            info.quantization = method if isinstance(method, str) else "unknown"
    if info.quantization is None:
        for p in paths:
            if p.lower().endswith(".gguf") and (m := _GGUF_QUANT.search(Path(p).stem)):
                info.quantization = m.group(1).upper()
                break
    return info


def read_config(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
