"""Purge proven on the real node: a revision folder collected by retention (the Delete policy's TTL) is
removed by the cleanup Job in a real container, and nothing outside it goes: a symlink inside it that points
out of the folder loses only the link, and a sibling folder beside it and the folder of another filter stay.
Real node: wrap in `flock /tmp/mc-real-node.lock`."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.test_stores_real_node import (
    Env,
    MiB,
    env,  # noqa: F401  (fixture)
    revisions_in,
    synthetic_repo,
)
from tests.support.kube import OPERATOR_NAMESPACE, wait_for

pytestmark = pytest.mark.integration


def test_collected_revision_goes_and_nothing_outside_it(env: Env) -> None:  # noqa: F811
    store = env.store("purge", retention={"policy": "Delete", "ttlSecondsAfterUnused": 2, "keepRevisions": 0})
    namespace = env.namespace("purge")
    repo = f"org/purge-{uuid.uuid4().hex[:6]}"
    commit, file_name = synthetic_repo(env, repo, 2 * MiB, "purge")
    env.cache(namespace, "model", repo, store)
    cache = env.ready(namespace, "model")
    folder = env.root(store) / "hf" / repo / "all"
    revision = folder / commit
    assert (revision / file_name).stat().st_size == 2 * MiB

    # Beside the revision, in the cleanup Job's own mount, and outside that mount.
    sibling = folder / "sibling-keep"
    sibling.mkdir()
    (sibling / "data").write_bytes(b"keep")
    other_filter = env.root(store) / "hf" / repo / "f-other"
    other_filter.mkdir()
    (other_filter / "data").write_bytes(b"keep")
    outside = env.root(store) / "outside-target"
    outside.write_bytes(b"keep")
    (revision / "escape-relative").symlink_to("../sibling-keep")
    (revision / "escape-absolute").symlink_to(outside)
    (revision / "escape-dir").symlink_to(other_filter, target_is_directory=True)

    download = cache["status"]["downloadRef"]["name"]
    env.k8s.delete_cache(namespace, "model")
    wait_for(lambda: not revision.exists() and not revision.is_symlink(), 180,
             describe="the revision folder removed by the cleanup Job", diagnostics=env.diagnostics)
    wait_for(lambda: env.k8s.get_download(OPERATOR_NAMESPACE, download) is None, 60,
             describe="the ModelDownload gone with its finalizer", diagnostics=env.diagnostics)
    assert revisions_in(folder) == ["sibling-keep"]
    assert (sibling / "data").read_bytes() == b"keep"
    assert (other_filter / "data").read_bytes() == b"keep"
    assert outside.read_bytes() == b"keep"
    reasons = [e.reason for e in env.k8s.events(OPERATOR_NAMESPACE) if e.involved_object.name == download]
    assert "RevisionRemoved" in reasons
