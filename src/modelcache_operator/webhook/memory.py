"""Memory warnings for prewarmed containers.

A container's ``limits.memory`` is compared with the prewarmed size plus ``max(min overhead, fraction)``
(seed 001: the limit must exceed model size + server overhead + slack, or the warmed pages are reclaimed,
because page cache is charged to the cgroup that reads it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..builders.quantity import parse_quantity

GIB = 1 << 30

def human_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def memory_warnings(
    container: Mapping[str, Any],
    prewarmed: Sequence[tuple[str, int | None]],
    overhead_min_bytes: int,
    overhead_fraction: float,
) -> list[str]:
    """Warnings for one target container; `prewarmed` lists (cache name, size in bytes or None)."""
    name = container.get("name")
    sizes = [size for _, size in prewarmed if size is not None]
    caches = ", ".join(cache for cache, _ in prewarmed)
    limit_text = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if not sizes:
        if limit_text is None:
            return [
                f'container "{name}" has no memory limit while prewarm is on for {caches}; set '
                "resources.limits.memory above model size + server overhead + slack"
            ]
        return []
    size = sum(sizes)
    overhead = max(overhead_min_bytes, int(size * overhead_fraction))
    needed = size + overhead
    if limit_text is None:
        return [
            f'container "{name}" has no memory limit while prewarm loads {human_bytes(size)} of {caches} '
            f"into the page cache; set resources.limits.memory to at least {human_bytes(needed)} "
            f"(model + {human_bytes(overhead)} overhead) plus what the server itself needs"
        ]
    limit = parse_quantity(limit_text)
    if limit is None or limit >= needed:
        return []
    return [
        f'container "{name}" memory limit {limit_text} ({human_bytes(limit)}) is below the prewarmed model '
        f"size {human_bytes(size)} ({caches}) + {human_bytes(overhead)} overhead = {human_bytes(needed)}; "
        "the warmed page cache will be reclaimed. Raise resources.limits.memory or set "
        "spec.prewarm.mode: off"
    ]
