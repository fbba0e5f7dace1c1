"""ossfs 2.0 mount options of a served volume, derived from the model's format and the serving hints
(seed 001), on top of the store admin's own options, which always win.

- GGUF: ``-o prefetch_chunks=-1`` (llama.cpp reads a GGUF file front to back; prefetching every chunk
  keeps ossfs ahead of it). It costs about 1.5 GiB of memory per open file, so it comes with a warning.
- Tensor parallelism > 1: ``-o memory_data_cache_size=<the store's ossfs2.memoryDataCacheSize>`` so the
  ranks on a node share one in-memory copy instead of each downloading the model; only where the admin
  set that size on the store (it is node memory the admin pays for).

A served PV's source is immutable in Kubernetes, so the inputs are ones fixed when the cache is created:
the (immutable) repo and the file filters, and spec.serving.tensorParallelSize.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..api import v1alpha2 as api

GGUF_PREFETCH_BYTES_PER_FILE = 3 << 29  # 1.5 GiB
PREFETCH_CHUNKS = "prefetch_chunks"
MEMORY_DATA_CACHE = "memory_data_cache_size"
# allowPatterns that select weights (the others pick configs and tokenizers).
WEIGHT_PATTERN_ENDS = (".gguf", ".safetensors", ".bin", ".pt", ".pth", "*")


@dataclass(frozen=True)
class ServingHints:
    format: str | None  # "gguf", "safetensors", ... None when unknown
    tensor_parallel: int = 1
    weight_files: int | None = None  # for the memory estimate; None when unknown


@dataclass(frozen=True)
class OssfsOptions:
    text: str  # the volume's otherOpts
    derived: tuple[str, ...]  # the options added here, "name=value"
    warnings: tuple[str, ...]


def option_names(other_opts: str | None) -> set[str]:
    """Names of the options in an ossfs command-line fragment: `-o a=1 -o b`, `-o a=1,b`, `-oa=1`."""
    names: set[str] = set()
    try:
        tokens = shlex.split(other_opts or "")
    except ValueError:
        tokens = (other_opts or "").split()
    after_flag = False
    for word in tokens:
        if word == "-o":
            after_flag = True
            continue
        value = word[2:] if word.startswith("-o") else word if after_flag else ""
        names.update(part.split("=", 1)[0].strip() for part in value.split(",") if part.strip())
        after_flag = False
    return names


def format_hint(spec: api.ModelCacheSpec) -> str | None:
    """"gguf" when the cache can only hold GGUF weights: every allowPattern names .gguf files, or the repo
    is a GGUF repo by the hubs' naming convention (owner/Name-GGUF). None otherwise (not known up front)."""
    hf, ms = spec.source.huggingface, spec.source.modelscope
    if hf is not None:
        repo, patterns = hf.repo, hf.allowPatterns or []
    elif ms is not None:
        repo, patterns = ms.model, ms.allowPatterns or []
    else:
        return None
    weights = [p for p in patterns if p.lower().endswith(WEIGHT_PATTERN_ENDS)]
    if (weights and all(p.lower().endswith(".gguf") for p in weights)) or repo.lower().endswith("gguf"):
        return "gguf"
    return None


def ossfs_options(admin_opts: str | None, hints: ServingHints, memory_data_cache_size: str | None) -> OssfsOptions:
    """The admin's options followed by the derived ones the admin did not set."""
    admin = option_names(admin_opts)
    derived: list[str] = []
    warnings: list[str] = []
    if (hints.format or "").lower() == "gguf" and PREFETCH_CHUNKS not in admin:
        derived.append(f"{PREFETCH_CHUNKS}=-1")
        files = hints.weight_files
        cost = "about 1.5 GiB per open GGUF file" if files is None else (
            f"about {files * GGUF_PREFETCH_BYTES_PER_FILE / (1 << 30):.1f} GiB ({files} files x 1.5 GiB)")
        warnings.append(f"ossfs2 -o {PREFETCH_CHUNKS}=-1 for GGUF costs {cost} of node memory per mount")
    if hints.tensor_parallel > 1 and MEMORY_DATA_CACHE not in admin:
        if memory_data_cache_size:
            derived.append(f"{MEMORY_DATA_CACHE}={memory_data_cache_size}")
        else:
            warnings.append(f"{hints.tensor_parallel} tensor-parallel ranks without -o {MEMORY_DATA_CACHE}: each "
                            "rank downloads the model; the store's ossfs2.memoryDataCacheSize is not set")
    text = " ".join(part for part in [(admin_opts or "").strip(), *(f"-o {d}" for d in derived)] if part)
    return OssfsOptions(text, tuple(derived), tuple(warnings))


def served_hints(spec: api.ModelCacheSpec) -> ServingHints:
    """The hints of a cache's served volume, from what is fixed when it is created."""
    return ServingHints(format_hint(spec), spec.serving.tensorParallelSize or 1)
