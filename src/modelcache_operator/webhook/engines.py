"""Inference-engine command lines: flags that waste the cache or undo prewarm, found in a container's argv.

Flags are found in command and args, including inside ``sh -c "..."`` strings, because engines are often
started through a shell.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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
