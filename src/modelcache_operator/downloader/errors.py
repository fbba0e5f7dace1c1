"""Exit codes and the exception hierarchy of the downloader.

The Job builder maps exit codes 10-19 to a podFailurePolicy FailJob rule: retrying cannot fix them.
Everything else (75 for network trouble, 1 for a crash) is left to the Job's backoffLimit.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    PUBLISHED = 0
    INTERNAL = 1
    UNAUTHORIZED = 10
    NOT_FOUND = 11
    INSUFFICIENT_SPACE = 12
    CHECKSUM_MISMATCH = 13
    UNSAFE_FILE_NAME = 14
    LOCK_HELD = 15
    INVALID_ARGUMENT = 16
    QUOTA_EXCEEDED = 17
    NETWORK = 75  # EX_TEMPFAIL


NON_RETRYABLE_EXIT_CODES: tuple[int, ...] = tuple(range(10, 20))
"""Exit codes for a podFailurePolicy `FailJob` rule (operator In)."""

RETRYABLE_EXIT_CODES: tuple[int, ...] = (ExitCode.NETWORK.value,)


class DownloadError(Exception):
    """A failure with a stable reason (CamelCase, for status and termination message) and exit code."""

    reason: str = "Internal"
    exit_code: ExitCode = ExitCode.INTERNAL


class Unauthorized(DownloadError):
    reason = "Unauthorized"
    exit_code = ExitCode.UNAUTHORIZED


class NotFound(DownloadError):
    reason = "NotFound"
    exit_code = ExitCode.NOT_FOUND


class InsufficientSpace(DownloadError):
    reason = "InsufficientSpace"
    exit_code = ExitCode.INSUFFICIENT_SPACE


class ChecksumMismatch(DownloadError):
    reason = "ChecksumMismatch"
    exit_code = ExitCode.CHECKSUM_MISMATCH


class UnsafeFileName(DownloadError):
    reason = "UnsafeFileName"
    exit_code = ExitCode.UNSAFE_FILE_NAME


class LockHeld(DownloadError):
    reason = "LockHeld"
    exit_code = ExitCode.LOCK_HELD


class InvalidArgument(DownloadError):
    reason = "InvalidArgument"
    exit_code = ExitCode.INVALID_ARGUMENT


class QuotaExceeded(DownloadError):
    reason = "QuotaExceeded"
    exit_code = ExitCode.QUOTA_EXCEEDED


class NetworkError(DownloadError):
    """5xx answers, resets, timeouts, truncated bodies: worth another try."""

    reason = "Network"
    exit_code = ExitCode.NETWORK


def status_error(status: int | None, what: str) -> DownloadError:
    """The error for an HTTP error status, by what retrying can fix."""
    if status in (401, 403):
        return Unauthorized(f"{what}: HTTP {status}, the token is missing, wrong or lacks access")
    if status == 404:
        return NotFound(f"{what}: HTTP 404")
    if status is not None and (status >= 500 or status in (408, 429)):
        return NetworkError(f"{what}: HTTP {status}")
    return DownloadError(f"{what}: HTTP {status}")
