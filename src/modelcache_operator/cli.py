"""`modelcache-operator`: run the operator, print the CRD, or purge a cache volume (the cleanup Job).

Subcommands import lazily: `purge` runs in the cleanup Job and must not load kopf or register handlers.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _start_webhook_process() -> subprocess.Popen[bytes]:
    """The admission server runs in its own process so that admission never queues behind kopf's event
    loop or shares its GIL (see webhook/server.py). It dies with this process, even on SIGKILL."""

    def die_with_parent() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return subprocess.Popen([sys.executable, "-m", "modelcache_operator.cli", "webhook"],
                            preexec_fn=die_with_parent)  # noqa: PLW1509 - prctl only, no locks taken


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from .operator import handlers, metrics

    _configure_logging()
    # kopf logs every handler success; with a resync timer per cache that drowns the transitions we log.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    webhook = None
    stop, webhook_died, shutting_down = threading.Event(), threading.Event(), threading.Event()
    if handlers.CONFIG.webhook_cert and handlers.CONFIG.webhook_key:
        webhook = _start_webhook_process()

        def stop_when_webhook_exits(process: subprocess.Popen[bytes]) -> None:
            code = process.wait()
            if not shutting_down.is_set():
                logging.error("the admission webhook process exited with %s; stopping the operator", code)
                webhook_died.set()
                stop.set()

        def drain_webhook(process: subprocess.Popen[bytes]) -> None:
            """On shutdown the webhook answers for shutdown_delay_seconds more, unready, while the Lease goes."""
            shutting_down.set()
            if process.poll() is None:
                process.terminate()

        threading.Thread(target=stop_when_webhook_exits, args=(webhook,), daemon=True).start()
        handlers.ON_SHUTDOWN.append(lambda: drain_webhook(webhook))
    else:
        logging.warning("MODELCACHE_WEBHOOK_CERT is unset: admission webhooks are off, pods are not injected")
    start_http_server(handlers.CONFIG.metrics_port, registry=metrics.REGISTRY)
    namespaces = handlers.CONFIG.namespaces
    try:
        # kopf takes its identity from POD_ID, else from getpass.getuser(), which fails for the image's UID (it
        # has no passwd entry); in a pod the host name is the pod's name.
        os.environ.setdefault("POD_ID", socket.gethostname())
        kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
                 liveness_endpoint=args.liveness, stop_flag=stop)
    finally:
        webhook_failed = webhook_died.is_set()
        shutting_down.set()
        if webhook is not None:
            drain_webhook(webhook)
            webhook.wait(handlers.CONFIG.shutdown_delay_seconds + 10)
    return 1 if webhook_failed else 0


def _webhook(_: argparse.Namespace) -> int:
    from .operator.config import OperatorConfig
    from .webhook.server import serve

    _configure_logging()
    config = OperatorConfig.from_env()
    if not (config.webhook_cert and config.webhook_key):
        logging.error("MODELCACHE_WEBHOOK_CERT and MODELCACHE_WEBHOOK_KEY are required")
        return 2
    serve(config, config.webhook_cert, config.webhook_key)
    return 0


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _crd(args: argparse.Namespace) -> int:
    from .api.crd import KINDS, render_chart_template, render_yaml

    if args.chart_template:
        Path(args.chart_template).write_text(render_chart_template())
    if args.output_dir:
        for kind in KINDS:
            (Path(args.output_dir) / kind.filename).write_text(render_yaml(kind))
    elif not args.chart_template:
        sys.stdout.write("---\n".join(render_yaml(kind) for kind in KINDS))
    return 0


def _docs(args: argparse.Namespace) -> int:
    from .api.reference import render_markdown

    Path(args.output).write_text(render_markdown())
    return 0


def _purge(args: argparse.Namespace) -> int:
    """Deletes one revision folder (the cleanup Job of a collected revision). The entry must be a plain name:
    the Job's mount is the download's folder, and nothing outside it may go."""
    root, entry = Path(args.root), args.entry
    if "/" in entry or entry in ("", ".", ".."):
        print(f"modelcache purge: {entry!r} is not a folder name", file=sys.stderr)
        return 2
    target = root / entry
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        print(f"modelcache purge: {target} is not a directory", file=sys.stderr)
        return 1
    if target.exists():
        shutil.rmtree(target)
        print(f"modelcache purge: removed {target}")
    else:
        print(f"modelcache purge: {target} was already gone")
    return 0


def _compile_cache(args: argparse.Namespace) -> int:
    from .compilecache.prepare import main as prepare

    return prepare(args.root, args.key, args.subdir or [], args.limit_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelcache-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator and, in a child process, its admission webhook")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint")
    sub.add_parser("webhook", help="run only the admission webhook server (`run` starts it for you)")
    crd = sub.add_parser("crd", help="print the CRDs generated from the API models")
    crd.add_argument("-o", "--output-dir", help="write one file per CRD into this directory instead of stdout")
    crd.add_argument("--chart-template", metavar="PATH",
                     help="also write the Helm chart's CRD template (gated by crds.enabled) to PATH")
    docs = sub.add_parser("docs", help="write the API field reference (markdown)")
    docs.add_argument("-o", "--output", default="docs/reference.md")
    purge = sub.add_parser("purge", help="delete one revision folder under a volume root (cleanup Job)")
    purge.add_argument("--root", required=True)
    purge.add_argument("--entry", required=True, help="the revision folder's name under --root")
    compile_cache = sub.add_parser("compile-cache", help="create a serving pod's compile-cache folder and evict "
                                                         "LRU folders over the cap (its init container)")
    compile_cache.add_argument("--root", required=True, help="the namespace's compile claim, mounted writable")
    compile_cache.add_argument("--key", required=True, help="<gpu>/<engine>-<version>")
    compile_cache.add_argument("--subdir", action="append", help="an engine cache folder to create in the key")
    compile_cache.add_argument("--limit-bytes", type=int, required=True)
    args = parser.parse_args(argv)
    handler = {"run": _run, "webhook": _webhook, "crd": _crd, "docs": _docs, "purge": _purge,
               "compile-cache": _compile_cache}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
