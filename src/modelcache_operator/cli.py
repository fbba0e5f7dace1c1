"""`modelcache-operator`: run the operator, print the CRD, or purge a cache volume (the cleanup Job).

Subcommands import lazily: `purge` runs in the cleanup Job and must not load kopf or register handlers.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from .operator import handlers, metrics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf logs every handler success; with a resync timer per cache that drowns the transitions we log.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if handlers.CONFIG.webhook_cert:
        from .webhook import server  # noqa: F401 - registers the admission handlers
    else:
        logging.warning("MODELCACHE_WEBHOOK_CERT is unset: admission webhooks are off, pods are not injected")
    start_http_server(handlers.CONFIG.metrics_port, registry=metrics.REGISTRY)
    namespaces = handlers.CONFIG.namespaces
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=args.liveness)
    return 0


def _crd(args: argparse.Namespace) -> int:
    from .api.crd import render_chart_template, render_yaml

    if args.chart_template:
        Path(args.chart_template).write_text(render_chart_template())
    if args.output:
        Path(args.output).write_text(render_yaml())
    elif not args.chart_template:
        sys.stdout.write(render_yaml())
    return 0


def _docs(args: argparse.Namespace) -> int:
    from .api.reference import render_markdown

    Path(args.output).write_text(render_markdown())
    return 0


def _purge(args: argparse.Namespace) -> int:
    """Deletes every entry under the volume root: the revision folders, the lock and any partial download."""
    root = Path(args.root)
    if not root.is_dir():
        print(f"modelcache purge: {root} is not a directory", file=sys.stderr)
        return 1
    removed = 0
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    print(f"modelcache purge: removed {removed} entries under {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelcache-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator and its admission webhook")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint")
    crd = sub.add_parser("crd", help="print the ModelCache CRD generated from the API models")
    crd.add_argument("-o", "--output", help="write to this file instead of stdout")
    crd.add_argument("--chart-template", metavar="PATH",
                     help="also write the Helm chart's CRD template (gated by crds.enabled) to PATH")
    docs = sub.add_parser("docs", help="write the ModelCache field reference (markdown)")
    docs.add_argument("-o", "--output", default="docs/reference.md")
    purge = sub.add_parser("purge", help="delete all cached files under a volume root (cleanup Job)")
    purge.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    handler = {"run": _run, "crd": _crd, "docs": _docs, "purge": _purge}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
