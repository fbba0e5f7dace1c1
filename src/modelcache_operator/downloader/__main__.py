"""`modelcache-download`: the program the download Job runs.

Every option has an environment default (MC_*), so the Job builder can pass everything as env. The hub token
comes only from MC_HUB_TOKEN; it is never an argument, never logged, never written anywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from pathlib import Path

from .errors import DownloadError, ExitCode, InvalidArgument
from .report import KubernetesStatusReporter, NullReporter, Reporter, load_api_client
from .run import Config, Downloader
from .sources import make_source

log = logging.getLogger("modelcache.downloader")
TERMINATION_MESSAGE_LIMIT = 4096


class Redactor:
    def __init__(self, secrets: list[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "[REDACTED]")
        return text


class RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that scrubs secrets from every formatted line, tracebacks included.

    A subclass on purpose: modelscope's logger setup turns plain StreamHandlers on the root logger to ERROR.
    """

    def __init__(self, redact: Redactor) -> None:
        super().__init__(sys.stderr)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def setup_logging(redact: Redactor) -> None:
    handler = RedactingHandler(redact)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def route_library_loggers() -> None:
    """modelscope attaches its own unredacted stderr handlers; send its records through ours instead."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("modelscope", "huggingface_hub")):
            lg = logging.getLogger(name)
            lg.handlers[:] = []
            lg.propagate = True


def _json_list(value: str | None, name: str) -> list[str] | None:
    if value is None or not value.strip():
        return None
    try:
        data = json.loads(value)
    except ValueError as e:
        raise InvalidArgument(f"{name} is not JSON: {e}") from None
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise InvalidArgument(f"{name} must be a JSON list of strings")
    return data or None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="modelcache-download", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hub", default=env("MC_HUB", "huggingface"), choices=["huggingface", "modelscope"])
    p.add_argument("--repo", default=env("MC_REPO"))
    p.add_argument("--revision", default=env("MC_REVISION"))
    p.add_argument("--allow-patterns", default=env("MC_ALLOW_PATTERNS"), help="JSON list of globs")
    p.add_argument("--ignore-patterns", default=env("MC_IGNORE_PATTERNS"), help="JSON list of globs")
    p.add_argument("--endpoint", default=env("MC_ENDPOINT") or None, help="mirror or self-hosted hub URL")
    p.add_argument("--root", default=env("MC_ROOT"), help="the mounted volume root")
    p.add_argument("--max-workers", type=int, default=int(env("MC_MAX_WORKERS", "8")))
    p.add_argument("--connections-per-file", type=int, default=int(env("MC_CONNECTIONS_PER_FILE", "8")),
                   help="parallel ranged GETs for one file of 64 MiB or more (Hugging Face protocol); 1: one stream")
    p.add_argument("--report", default=env("MC_REPORT", "kubernetes" if env("MC_DOWNLOAD_NAME") else "none"),
                   choices=["kubernetes", "none"])
    p.add_argument("--termination-log", default=env("MC_TERMINATION_LOG", "/dev/termination-log"))
    p.add_argument("--lock-stale-seconds", type=float, default=float(env("MC_LOCK_STALE_SECONDS", "60")))
    p.add_argument("--lock-heartbeat-seconds", type=float,
                   default=float(env("MC_LOCK_HEARTBEAT_SECONDS", "5")))
    p.add_argument("--lock-wait-seconds", type=float, default=float(env("MC_LOCK_WAIT_SECONDS", "70")),
                   help="wait this long for a live lock holder to finish or go stale before LockHeld")
    p.add_argument("--progress-interval", type=float, default=float(env("MC_PROGRESS_INTERVAL", "5")))
    p.add_argument("--retries", type=int, default=int(env("MC_RETRIES", "5")),
                   help="in-process retries of a network failure per request, with exponential backoff")
    p.add_argument("--retry-backoff", type=float, default=float(env("MC_RETRY_BACKOFF_SECONDS", "1")))
    p.add_argument("--quota-free-bytes", type=int, default=int(env("MC_QUOTA_FREE_BYTES") or -1),
                   help="refuse a revision larger than this (QuotaExceeded); -1: no quota")
    return p.parse_args(argv)


def build_config(a: argparse.Namespace, token: str | None) -> Config:
    for name in ("repo", "root"):
        if not getattr(a, name):
            raise InvalidArgument(f"--{name} (or MC_{name.upper()}) is required")
    if a.max_workers < 1:
        raise InvalidArgument("--max-workers must be at least 1")
    revision = a.revision or ("main" if a.hub == "huggingface" else "master")
    job = os.environ.get("MC_JOB_NAME", "")
    holder = os.environ.get("POD_NAME") or socket.gethostname()
    download = f"{os.environ.get('MC_DOWNLOAD_NAMESPACE', '')}/{os.environ.get('MC_DOWNLOAD_NAME', '')}"
    return Config(
        hub=a.hub, repo=a.repo, revision=revision, root=Path(a.root),
        allow_patterns=_json_list(a.allow_patterns, "allow patterns"),
        ignore_patterns=_json_list(a.ignore_patterns, "ignore patterns"),
        endpoint=a.endpoint, token=token, max_workers=a.max_workers, job_name=job,
        lock_identity={"holder": holder, "pid": os.getpid(), "job": job, "download": download},
        lock_stale_seconds=a.lock_stale_seconds, lock_heartbeat_seconds=a.lock_heartbeat_seconds,
        lock_wait_seconds=a.lock_wait_seconds,
        progress_interval=a.progress_interval, retries=a.retries, retry_backoff=a.retry_backoff,
        quota_free_bytes=None if a.quota_free_bytes < 0 else a.quota_free_bytes,
        pinned_revision=os.environ.get("MC_PINNED_REVISION") or None)


def make_reporter(kind: str) -> Reporter:
    if kind == "none":
        return NullReporter()
    namespace, name = os.environ.get("MC_DOWNLOAD_NAMESPACE"), os.environ.get("MC_DOWNLOAD_NAME")
    if not namespace or not name:
        raise InvalidArgument("--report kubernetes needs MC_DOWNLOAD_NAMESPACE and MC_DOWNLOAD_NAME")
    return KubernetesStatusReporter(load_api_client(), namespace, name)


def write_termination_message(path: str, reason: str, message: str,
                              report: dict[str, object] | None = None) -> None:
    """`{"reason", "message"}`, plus the final report on success: the kubelet keeps it in the pod's status,
    so the operator learns the outcome even when the last status patch was lost."""
    extra = {"report": report} if report else {}
    line = json.dumps({"reason": reason, "message": message, **extra})
    while len(line.encode()) > TERMINATION_MESSAGE_LIMIT:
        message = message[: len(message) * 3 // 4] + "…"
        line = json.dumps({"reason": reason, "message": message, **extra})
    try:
        with open(path, "w") as f:
            f.write(line + "\n")
    except OSError as e:
        log.warning("Could not write the termination message to %s: %s", path, e)


def run(argv: list[str] | None = None) -> int:
    token = os.environ.get("MC_HUB_TOKEN") or None
    redact = Redactor([token] if token else [])
    setup_logging(redact)
    args = parse_args(argv)
    downloader: Downloader | None = None
    try:
        cfg = build_config(args, token)
        reporter = make_reporter(args.report)
        source = make_source(cfg.hub, cfg.repo, cfg.endpoint, token, max(1, args.connections_per_file))
        route_library_loggers()
        if os.environ.get("MC_MODE") == "check":
            from .upstream_check import check_upstream  # noqa: PLC0415  (only this mode needs it; it loads pydantic)

            commit = check_upstream(cfg, source, reporter)
            write_termination_message(args.termination_log, "Checked", f"{cfg.revision} points at {commit}")
            return ExitCode.PUBLISHED
        if isinstance(reporter, KubernetesStatusReporter) and not cfg.pinned_revision:
            cfg.pinned_revision = reporter.recorded_pin()
        downloader = Downloader(cfg, source, reporter)
        manifest = downloader.run()
        final = downloader.last_report
        write_termination_message(args.termination_log, "Published",
                                  f"revision {manifest.revision} published ({manifest.fileCount} files)",
                                  final.model_dump(mode="json", exclude_none=True) if final else None)
        return ExitCode.PUBLISHED
    except DownloadError as e:
        error: DownloadError = e
    except Exception as e:
        log.exception("Unexpected failure")
        error = DownloadError(f"{type(e).__name__}: {e}")
    message = redact(str(error))
    log.error("Failed: %s: %s (exit %d)", error.reason, message, error.exit_code)
    write_termination_message(args.termination_log, error.reason, message)
    if downloader is not None:
        downloader.fail(error, message)
    return int(error.exit_code)


def main() -> None:
    code = run()
    logging.shutdown()
    sys.stderr.flush()
    # Worker threads of a failed run may still sit in a blocking read; do not wait for them.
    os._exit(code)


if __name__ == "__main__":
    main()
