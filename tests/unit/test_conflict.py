"""Which cache keeps a storage location that two caches share: the earlier one, by creation time then name."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from modelcache_operator.builders import status
from modelcache_operator.builders.conflict import StorageClaim, claim_of, storage_conflict
from modelcache_operator.builders.status import Observation


def nfs(path: str, server: str = "10.0.0.2") -> dict[str, Any]:
    return {"source": {"huggingface": {"repo": "Qwen/Qwen3-8B"}},
            "storage": {"nfs": {"server": server, "path": path}, "capacity": "10Gi"}}


FIRST = StorageClaim("team-a", "first", "2026-11-21T10:00:00Z", nfs("/exports/qwen"))
LATER = StorageClaim("team-b", "later", "2026-11-21T10:00:05Z", nfs("/exports/qwen"))


def test_the_later_cache_gets_the_conflict_naming_the_earlier_one() -> None:
    message = storage_conflict(LATER, [FIRST, LATER])
    assert message is not None and "team-a/first" in message and "waits until" in message
    assert storage_conflict(FIRST, [FIRST, LATER]) is None


def test_same_second_is_decided_by_namespace_then_name() -> None:
    twin = replace(LATER, created=FIRST.created)
    assert storage_conflict(twin, [FIRST]) is not None
    assert storage_conflict(FIRST, [twin]) is None


def test_nested_paths_conflict_and_distinct_ones_do_not() -> None:
    inside = replace(LATER, spec=nfs("/exports/qwen/sub"))
    assert storage_conflict(inside, [FIRST]) is not None
    elsewhere = replace(LATER, spec=nfs("/exports/other"))
    assert storage_conflict(elsewhere, [FIRST]) is None
    other_server = replace(LATER, spec=nfs("/exports/qwen", server="10.0.0.3"))
    assert storage_conflict(other_server, [FIRST]) is None


def test_claim_of_reads_a_stored_body() -> None:
    body = {"metadata": {"namespace": "ns", "name": "c", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": nfs("/x")}
    assert claim_of(body) == StorageClaim("ns", "c", "2026-01-01T00:00:00Z", nfs("/x"))


def test_conflict_verdict_is_pending_with_storage_conflict_everywhere() -> None:
    obs = Observation(generation=1, model="hf:Qwen/Qwen3-8B", pv_name=None, pvc_name="pvc", pvc_phase=None,
                      job_name="", job=None, report=None, storage_conflict="clash with team-a/first")
    result = status.desired_status(obs, "2026-01-01T00:00:00Z")
    assert result["phase"] == "Pending"
    assert {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]} == {
        "StorageReady": ("False", "StorageConflict"), "Downloaded": ("False", "StorageConflict"),
        "Ready": ("False", "StorageConflict")}
    assert all(c["message"] == "clash with team-a/first" for c in result["conditions"])
