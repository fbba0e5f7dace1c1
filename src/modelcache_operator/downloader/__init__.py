"""The downloader run by the download Job: hub -> `<root>/<sha>/`, verified, published by its manifest.

The public names load on first access (PEP 562): `python -m modelcache_operator.downloader` imports this
package first, and the manifest models would pull in pydantic before the first request to the hub.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import NON_RETRYABLE_EXIT_CODES, RETRYABLE_EXIT_CODES, DownloadError, ExitCode
    from .manifest import Manifest, load_manifest, verify_manifest
    from .report import KubernetesStatusReporter, NullReporter

_EXPORTS = {
    "NON_RETRYABLE_EXIT_CODES": "errors",
    "RETRYABLE_EXIT_CODES": "errors",
    "DownloadError": "errors",
    "ExitCode": "errors",
    "KubernetesStatusReporter": "report",
    "Manifest": "manifest",
    "NullReporter": "report",
    "load_manifest": "manifest",
    "verify_manifest": "manifest",
}
__all__ = [
    "NON_RETRYABLE_EXIT_CODES",
    "RETRYABLE_EXIT_CODES",
    "DownloadError",
    "ExitCode",
    "KubernetesStatusReporter",
    "Manifest",
    "NullReporter",
    "load_manifest",
    "verify_manifest",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
