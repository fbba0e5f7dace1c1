"""A branch or tag is resolved once per download, and pinned: whether upstream moved since is a periodic,
bounded check (one small Job per download and interval), shown as the `SourceUpdated` condition that the
user acts on. Pure: the operator decides with these, the check Job's downloader writes `status.upstream`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from ..api import v1alpha2 as api
from ..api.names import ANNOTATION_RETRY, LABEL_ROLE
from . import layout, naming
from .status import ConditionValue

SOURCE_UPDATED = "SourceUpdated"
CHECK_ROLE = "upstream-check"
# A finished check Job goes after this long: a check that failed (the hub down) is tried again then, not
# sooner, so an unreachable hub sees one request per download every few minutes at most.
CHECK_JOB_TTL_SECONDS = 300
CHECK_JOB_DEADLINE_SECONDS = 300
_COMMIT = re.compile(r"[0-9a-f]{40}")


def is_commit(revision: str) -> bool:
    """A full commit sha never moves, so it is never checked."""
    return bool(_COMMIT.fullmatch(revision))


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def check_due(spec: api.ModelDownloadSpec, status: api.ModelDownloadStatus, interval_seconds: float,
              now: datetime) -> bool:
    """A published download of a branch or tag is checked every `interval_seconds` (0: never), counted from
    its last check, else from its publication."""
    if interval_seconds <= 0 or status.phase != "Ready" or not status.resolvedRevision:
        return False
    if is_commit(layout.source_key(spec.source).revision):
        return False
    since = status.upstream.checkedAt if status.upstream else (status.download.updatedAt if status.download else None)
    if since is None:
        return True
    return now - _parse(since) >= timedelta(seconds=interval_seconds)


def check_job_name(download: str, status: api.ModelDownloadStatus) -> str:
    """One name per check round: derived from the last check, so a finished check's Job is never re-applied,
    and a failed one is not retried before its TTL removes it."""
    last = status.upstream.checkedAt if status.upstream else ""
    suffix = naming.short_hash(download, last, length=6)
    return naming.bounded(f"mc-ck-{download}", naming.DNS_LABEL_MAX - len(suffix) - 1, download) + f"-{suffix}"


def source_updated(requested: str, pinned: str | None, upstream: api.UpstreamCheck | None) -> ConditionValue | None:
    """The condition a cache shows once its download's upstream was checked; None before that."""
    if upstream is None or pinned is None:
        return None
    if upstream.revision == pinned:
        return "False", "UpToDate", f"{requested} still points at {pinned} (checked {upstream.checkedAt})"
    return "True", "UpstreamMoved", (
        f"{requested} moved upstream from {pinned} to {upstream.revision} (checked {upstream.checkedAt}); this "
        f"cache stays on {pinned}. To move to the new commit, set the annotation {ANNOTATION_RETRY} on the "
        f"ModelCache to a new value (or set the source's revision to {upstream.revision})")


def with_check_mode(job: dict[str, Any], name: str) -> dict[str, Any]:
    """The download Job turned into a check: same identity, image, token and scheduling, but it only resolves
    the requested revision and reports the commit in `status.upstream`. It mounts no volume."""
    spec = job["spec"]
    pod = spec["template"]["spec"]
    labels = {**job["metadata"]["labels"], LABEL_ROLE: CHECK_ROLE}
    [container] = pod["containers"]
    # MC_ROOT points into the pod's own /tmp: the downloader's options require a root, the check writes none.
    env = [e for e in container["env"] if e["name"] not in ("MC_JOB_NAME", "MC_ROOT")]
    check = {**container, "env": [*env, {"name": "MC_JOB_NAME", "value": name}, {"name": "MC_MODE", "value": "check"},
                                  {"name": "MC_ROOT", "value": "/tmp/unused"}],
             "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
             "volumeMounts": [m for m in container["volumeMounts"] if m["name"] == "tmp"]}
    return {**job, "metadata": {**job["metadata"], "name": name, "labels": labels}, "spec": {
        "backoffLimit": 0,
        "activeDeadlineSeconds": CHECK_JOB_DEADLINE_SECONDS,
        "ttlSecondsAfterFinished": CHECK_JOB_TTL_SECONDS,
        "template": {"metadata": {"labels": labels}, "spec": {
            **{k: v for k, v in pod.items() if k != "initContainers"},
            "containers": [check],
            "volumes": [v for v in pod["volumes"] if v["name"] == "tmp"],
        }},
    }}
