"""The downloader run by the download Job: hub -> `<root>/<sha>/`, verified, published by its manifest."""

from .errors import NON_RETRYABLE_EXIT_CODES, RETRYABLE_EXIT_CODES, DownloadError, ExitCode
from .manifest import Manifest, load_manifest, verify_manifest
from .report import KubernetesStatusReporter, NullReporter

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
