"""Inference-engine command lines: flags that waste the cache or undo prewarm, found in a container's argv,
and the engine- and filesystem-aware prewarm policy (`prewarm_policy`).

Flags are found in command and args, including inside ``sh -c "..."`` strings, because engines are often
started through a shell.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..api import v1alpha2 as api
from ..builders.ossfs_options import ossfs_options, served_hints
from ..builders.quantity import parse_quantity
from ..builders.storage import backend_name
from .pinning import Pin


@dataclass(frozen=True)
class EngineFlag:
    flag: str  # "--name", dashes (underscores in pod args are normalised)
    value: str | None  # the value that matters, or None for a bare flag
    prewarm_only: bool  # only a problem while prewarm is on
    why: str


ENGINE_FLAGS: tuple[EngineFlag, ...] = (
    # vLLM and SGLang both have LoadFormat.DUMMY: random weights, the checkpoint is never read.
    EngineFlag(
        "--load-format",
        "dummy",
        False,
        "initialises random weights and never reads the model files, so the cache is unused",
    ),
    # SGLang posix_fadvise(DONTNEED)s each checkpoint file after loading it: it evicts what prewarm loaded,
    # and a container restart reads from storage again.
    EngineFlag(
        "--weight-loader-drop-cache-after-load",
        None,
        True,
        "drops the page cache of every checkpoint file after loading, undoing prewarm",
    ),
)


def _argv_tokens(container: Mapping[str, Any]) -> list[str]:
    # Split each element too: engines are often started as `sh -c "python3 -m sglang... --flag"`.
    tokens: list[str] = []
    for item in [*(container.get("command") or []), *(container.get("args") or [])]:
        try:
            tokens.extend(shlex.split(str(item)))
        except ValueError:
            tokens.extend(str(item).split())
    return tokens


def engine_flag_hits(container: Mapping[str, Any], prewarm_on: bool) -> list[tuple[EngineFlag, str]]:
    """(flag, text as written) for every ENGINE_FLAGS entry that the container's command line uses."""
    tokens = _argv_tokens(container)
    hits: list[tuple[EngineFlag, str]] = []
    for i, token in enumerate(tokens):
        if not token.startswith("--"):
            continue
        name, eq, inline = token.partition("=")
        name = name.replace("_", "-")
        for flag in ENGINE_FLAGS:
            if flag.flag != name or (flag.prewarm_only and not prewarm_on):
                continue
            if flag.value is None:
                hits.append((flag, name))
                continue
            value = inline if eq else (tokens[i + 1] if i + 1 < len(tokens) else "")
            if value == flag.value:
                hits.append((flag, f"{name} {value}"))
    return hits


def engine_warnings(container: Mapping[str, Any], prewarm_on: bool) -> list[str]:
    return [
        f'container "{container.get("name")}" runs with {text}, which {flag.why}'
        for flag, text in engine_flag_hits(container, prewarm_on)
    ]


# ----- which engine, how many ranks, and what the filesystem under it means for prewarm -----

# Stores whose volumes are NFS mounts (EFS is NFS 4.1). vLLM prefetches a checkpoint on NFS/Lustre
# into memory itself when it fits in RAM, so the hook's full read there is a second, wasted one.
SELF_PREFETCH_BACKENDS = frozenset({"nfs", "efs"})
TP_FLAGS = frozenset({"--tensor-parallel-size", "-tp", "--tp-size", "--tp"})
MEMORY_DATA_CACHE = "memory_data_cache_size"


def engine_of(container: Mapping[str, Any]) -> str | None:
    """"vllm" or "sglang" when the container's command line starts that engine (`vllm serve`,
    `python -m vllm.entrypoints...`, `python -m sglang.launch_server`), else None."""
    for token in _argv_tokens(container):
        base = token.rsplit("/", 1)[-1]
        for engine in ("vllm", "sglang"):
            if base == engine or base.startswith(f"{engine}."):
                return engine
    return None


def tensor_parallel_size(container: Mapping[str, Any]) -> int:
    """The --tensor-parallel-size / -tp / --tp-size the command line asks for; 1 when absent or unreadable."""
    tokens = _argv_tokens(container)
    for i, token in enumerate(tokens):
        name, eq, inline = token.partition("=")
        if name.replace("_", "-") in TP_FLAGS:
            value = inline if eq else (tokens[i + 1] if i + 1 < len(tokens) else "")
            return int(value) if value.isdigit() and int(value) > 0 else 1
    return 1


@dataclass(frozen=True)
class CacheMedium:
    """What a prewarmed cache sits on, as the pod will mount it."""

    cache: str
    backend: str | None  # a ModelStore backend name (api.STORAGE_BACKENDS), None if the store is unknown
    mount_options: str = ""  # the served volume's ossfs2 options ("" elsewhere)
    size_bytes: int | None = None


@dataclass(frozen=True)
class PrewarmPolicy:
    skip_reason: str | None  # the hook is not injected into this container, and why (pod annotation)
    warnings: tuple[str, ...]


def prewarm_policy(container: Mapping[str, Any], media: Sequence[CacheMedium], memory_limit: int | None,
                   hook_on: bool) -> PrewarmPolicy:
    """Engine- and filesystem-aware decision for one target container whose caches `media` are
    prewarmed (by the hook when hook_on). Pure: the caller applies it."""
    name = container.get("name")
    engine = engine_of(container)
    warnings: list[str] = []
    tp = tensor_parallel_size(container)
    for m in media:
        if tp > 1 and m.backend == "ossfs2" and MEMORY_DATA_CACHE not in m.mount_options:
            warnings.append(
                f'container "{name}" runs {tp} tensor-parallel ranks on the ossfs2 cache "{m.cache}" without '
                f"-o {MEMORY_DATA_CACHE}: each rank downloads the model itself; ask the store's admin to set "
                "ossfs2.memoryDataCacheSize and set spec.serving.tensorParallelSize on the ModelCache")
    skip = None
    sizes = [m.size_bytes for m in media]
    if (hook_on and engine == "vllm" and media and all(m.backend in SELF_PREFETCH_BACKENDS for m in media)
            and None not in sizes):
        total = sum(s for s in sizes if s is not None)
        if memory_limit is None or total <= memory_limit:
            skip = "vllm-prefetches-nfs"
            warnings.append(
                f'container "{name}" runs vLLM on NFS ({", ".join(m.cache for m in media)}), which prefetches '
                "checkpoints that fit in memory itself; the prewarm hook is skipped (a second full read)")
    return PrewarmPolicy(skip, tuple(warnings))


StoreLookup = Callable[[str], api.ModelStoreSpec | None]


def no_stores(_: str) -> api.ModelStoreSpec | None:
    return None


def medium_of(pin: Pin, store_lookup: StoreLookup) -> tuple[CacheMedium, tuple[str, ...]]:
    """A pin's medium, with the served volume's ossfs2 options as the operator builds them (and their
    warnings, e.g. the memory GGUF prefetching costs)."""
    store = store_lookup(pin.status.store) if pin.status.store else None
    if store is None:
        return CacheMedium(pin.name, None, size_bytes=pin.size_bytes()), ()
    backend = backend_name(store)
    if store.ossfs2 is None:
        return CacheMedium(pin.name, backend, size_bytes=pin.size_bytes()), ()
    hints = served_hints(pin.spec)
    if hints.format is None and (pin.status.format or "").lower() == "gguf":
        hints = replace(hints, format="gguf")  # the warning may use what the download found
    hints = replace(hints, weight_files=pin.status.fileCount)
    opts = ossfs_options(store.ossfs2.otherOpts, hints, store.ossfs2.memoryDataCacheSize)
    return CacheMedium(pin.name, backend, opts.text, pin.size_bytes()), tuple(
        f'ModelCache "{pin.name}": {w}' for w in opts.warnings)


def container_policy(container: Mapping[str, Any], prewarmed: Sequence[Pin], store_lookup: StoreLookup,
                     hook_on: bool) -> PrewarmPolicy:
    """prewarm_policy for one target container over the pins prewarmed into it."""
    media: list[CacheMedium] = []
    notes: list[str] = []
    for pin in prewarmed:
        medium, warnings = medium_of(pin, store_lookup)
        media.append(medium)
        notes.extend(warnings)
    limit_text = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    policy = prewarm_policy(container, media, parse_quantity(limit_text) if limit_text else None, hook_on)
    return replace(policy, warnings=(*notes, *policy.warnings))
