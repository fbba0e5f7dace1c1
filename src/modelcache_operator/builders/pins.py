"""The pod annotation that records which ModelDownload each injected cache was pinned to. The webhook writes
it at admission; the operator reads it to keep those folders from garbage collection while the pod lives."""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..api.names import ANN_DOWNLOADS


def downloads_annotation(pins: Mapping[str, str]) -> str:
    """{cache: "<namespace>/<download>"} as the annotation's value."""
    return json.dumps(dict(pins), sort_keys=True)


def pinned_downloads(annotations: Mapping[str, str]) -> set[str]:
    """The "<namespace>/<download>" refs a pod is pinned to; a value that does not parse pins nothing."""
    try:
        pins = json.loads(annotations.get(ANN_DOWNLOADS) or "{}")
    except ValueError:
        return set()
    if not isinstance(pins, dict):
        return set()
    return {ref for ref in pins.values() if isinstance(ref, str) and ref.count("/") == 1}
