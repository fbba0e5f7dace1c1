"""A private download on a hostPath store in a namespace enforcing restricted Pod Security is refused with a
reason before anything is created; every other combination goes ahead (their Jobs are restricted-clean)."""

from __future__ import annotations

from typing import Any

import pytest

from modelcache_operator.builders import jobs
from modelcache_operator.builders.pod_security import ENFORCE_LABEL, private_download_refusal
from tests.unit.test_tenancy import store

RESTRICTED = {ENFORCE_LABEL: "restricted"}
HOST_PATH = {"hostPath": {"path": "/var/lib/models"}}


def test_a_private_hostpath_download_in_a_restricted_namespace_is_refused_naming_the_way_out() -> None:
    message = private_download_refusal("dev", store(**HOST_PATH), True, "team-a", RESTRICTED)
    assert message is not None
    assert all(part in message for part in ('ModelStore "dev"', 'namespace "team-a"', ENFORCE_LABEL,
                                            "CAP_CHOWN", "tokenSecretRef", "nfs"))


@pytest.mark.parametrize(("backend", "private", "labels"), [
    (HOST_PATH, False, RESTRICTED),  # shared: its Jobs run in the operator's namespace
    (HOST_PATH, True, {ENFORCE_LABEL: "baseline"}),  # baseline allows root and CAP_CHOWN
    (HOST_PATH, True, {"pod-security.kubernetes.io/warn": "restricted"}),  # warns, does not enforce
    (HOST_PATH, True, None),  # the namespace not seen yet: the store's own checks decide
    ({"nfs": {"server": "10.0.0.2", "path": "/exports"}}, True, RESTRICTED),
])
def test_every_other_combination_goes_ahead(backend: dict[str, Any], private: bool,
                                            labels: dict[str, str] | None) -> None:
    assert private_download_refusal("s", store(**backend), private, "team-a", labels) is None


def test_the_refusal_matches_what_the_job_builder_adds_for_hostpath_only() -> None:
    """The reason for the refusal, kept in step with the builder: only hostPath gets the root init container."""
    root = jobs.volume_permissions(store(**HOST_PATH), "img")
    assert [c["securityContext"]["runAsUser"] for c in root] == [0]
    assert root[0]["securityContext"]["capabilities"]["add"] == ["CHOWN"]
    assert jobs.volume_permissions(store(nfs={"server": "10.0.0.2", "path": "/x"}), "img") == []
