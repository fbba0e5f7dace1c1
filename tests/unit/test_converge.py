"""The shared reconcile: an object the apiserver says is gone is not reconciled again from a stale body."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from modelcache_operator.operator.config import OperatorConfig
from modelcache_operator.operator.converge import Converger


class GoneKube:
    """Answers every status write with 404, as the apiserver does for a deleted object."""

    def __init__(self) -> None:
        self.status_writes = 0

    def patch_status(self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]) -> None:
        self.status_writes += 1
        raise ApiException(status=404, reason="Not Found")


class Describing(Converger):
    kind = "ModelStore"

    def converge(self, body: dict[str, Any], view: Any) -> str:
        return self.write_status(body, lambda previous: {"phase": "Ready", "observedGeneration": 1})


def store(uid: str) -> dict[str, Any]:
    return {"kind": "ModelStore", "metadata": {"name": "s", "uid": uid, "generation": 1}, "status": {}}


def test_a_status_write_answered_404_marks_that_object_gone_by_uid() -> None:
    kube = GoneKube()
    reconciler = Describing(kube, OperatorConfig.from_env(), lambda *_: None)  # type: ignore[arg-type]
    assert not reconciler.is_gone(store("uid-1"))
    assert reconciler.reconcile(store("uid-1"), None) == "Ready"
    assert kube.status_writes == 1
    assert reconciler.is_gone(store("uid-1"))
    assert not reconciler.is_gone(store("uid-2")), "a new object of the same name is not the one gone"


def test_the_deletion_event_clears_the_mark() -> None:
    reconciler = Describing(GoneKube(), OperatorConfig.from_env(), lambda *_: None)  # type: ignore[arg-type]
    reconciler.reconcile(store("uid-1"), None)
    reconciler.deleted(("ModelStore", None, "s"))
    assert not reconciler.is_gone(store("uid-1"))
