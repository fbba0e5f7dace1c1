"""`MC_MODE=check`: the periodic upstream check of a published download. It resolves the requested branch or
tag once (no lock, no volume, no file written) and reports the commit it points at now in `status.upstream`;
the operator compares it with the pinned commit (builders/upstream.py)."""

from __future__ import annotations

import logging

from .errors import InvalidArgument
from .manifest import now_rfc3339
from .report import KubernetesStatusReporter, Reporter
from .run import Config
from .sources import Source

log = logging.getLogger("modelcache.downloader")


def check_upstream(cfg: Config, source: Source, reporter: Reporter) -> str:
    if not isinstance(reporter, KubernetesStatusReporter):
        raise InvalidArgument("MC_MODE=check reports to its ModelDownload: it needs --report kubernetes")
    plan = source.plan(cfg.revision, cfg.allow_patterns, cfg.ignore_patterns)
    log.info("Upstream check: %s of %s points at %s", cfg.revision, cfg.repo, plan.revision)
    reporter.send_upstream(plan.revision, cfg.job_name, now_rfc3339())
    return plan.revision
