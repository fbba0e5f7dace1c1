"""Leader election settings and identity (the election itself runs against the real apiserver in
tests/integration/test_leader_election.py)."""

from __future__ import annotations

import socket

import pytest

from modelcache_operator.operator.config import OperatorConfig
from modelcache_operator.operator.lease import LeaseTiming, holder_identity


def test_holder_identity_is_the_pod_name_else_the_hostname() -> None:
    pod = "modelcache-operator-7d9f-abcde"
    assert holder_identity({"MODELCACHE_POD_NAME": pod}) == pod
    assert holder_identity({}) == socket.gethostname()
    assert holder_identity({"MODELCACHE_POD_NAME": ""}) == socket.gethostname()


def test_client_go_defaults_and_their_order_is_enforced() -> None:
    timing = LeaseTiming()
    assert (timing.lease_duration, timing.renew_deadline, timing.retry_period) == (15.0, 10.0, 2.0)
    assert timing.request_timeout < timing.renew_deadline
    config = OperatorConfig.from_env()
    assert (config.lease_duration_seconds, config.renew_deadline_seconds, config.retry_period_seconds) == (15, 10, 2)
    for duration, deadline, retry in ((10, 10, 2), (15, 10, 10), (15, 10, 0)):
        with pytest.raises(ValueError, match="retryPeriod < renewDeadline < leaseDuration"):
            LeaseTiming(duration, deadline, retry)
