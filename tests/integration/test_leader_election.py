"""The Lease elector (operator/lease.py) against the real apiserver, with short timings: one leader at a
time, the holder on the Lease, a hand-over in one retry on release, and a cut-off leader that gives up
before anyone else takes over."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import kubernetes
import pytest

from modelcache_devcluster.cluster import LocalCluster, free_port
from modelcache_operator.operator.lease import LeaseElector, LeaseTiming
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.leases import lease_holder

pytestmark = pytest.mark.integration

TIMING = LeaseTiming(lease_duration=4.0, renew_deadline=2.5, retry_period=0.5)


@dataclass
class Candidate:
    elector: LeaseElector
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.elector.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)


class Sampler(threading.Thread):
    """Polls every candidate's leading() every 5 ms: when each one started and stopped leading, and whether
    two ever led at once."""

    def __init__(self, candidates: dict[str, Candidate]):
        super().__init__(daemon=True)
        self.candidates = candidates
        self.overlaps = 0
        self.since: dict[str, float] = {}  # identity -> when it last started leading
        self.until: dict[str, float] = {}  # identity -> when it last stopped leading
        self.stopped = threading.Event()

    def run(self) -> None:
        was = dict.fromkeys(self.candidates, False)
        while not self.stopped.wait(0.005):
            now = time.monotonic()
            now_leading = {name: c.elector.leading() for name, c in self.candidates.items()}
            self.overlaps += sum(now_leading.values()) > 1
            for name, leading in now_leading.items():
                if leading != was[name]:
                    (self.since if leading else self.until)[name] = now
            was = now_leading

    def finish(self) -> None:
        """Stops sampling; fails if two candidates ever led at once."""
        self.stopped.set()
        self.join()
        assert self.overlaps == 0, "two replicas led at once"


@pytest.fixture
def pair(k8s: Cluster, local_cluster: LocalCluster) -> Iterator[tuple[dict[str, Candidate], str]]:
    lease = f"elect-{uuid.uuid4().hex[:6]}"
    candidates = {}
    for name in ("replica-a", "replica-b"):
        client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=local_cluster.state.kubeconfig)
        candidates[name] = Candidate(LeaseElector(client, OPERATOR_NAMESPACE, lease, name, TIMING))
    yield candidates, lease
    for candidate in candidates.values():
        candidate.halt()
    kubernetes.client.CoordinationV1Api(k8s.client).delete_namespaced_lease(lease, OPERATOR_NAMESPACE)


def leader_of(candidates: dict[str, Candidate]) -> str | None:
    leaders = [name for name, c in candidates.items() if c.elector.leading()]
    return leaders[0] if len(leaders) == 1 else None


def start_election(candidates: dict[str, Candidate]) -> tuple[Sampler, str]:
    """Starts sampling, then every candidate; returns the sampler and the first leader."""
    sampler = Sampler(candidates)
    sampler.start()
    for candidate in candidates.values():
        candidate.start()
    return sampler, wait_for(lambda: leader_of(candidates), 10, describe="one leader")


def test_one_leader_named_on_the_lease_and_a_release_hands_over_in_one_retry(
        pair: tuple[dict[str, Candidate], str], k8s: Cluster) -> None:
    candidates, lease = pair
    sampler, first = start_election(candidates)
    assert lease_holder(k8s.client, lease) == first
    time.sleep(TIMING.lease_duration * 1.5)  # renews keep it: the follower never takes a live Lease
    assert leader_of(candidates) == first and lease_holder(k8s.client, lease) == first

    candidates[first].halt()
    released_at = time.monotonic()
    assert candidates[first].elector.release()
    second = wait_for(lambda: leader_of(candidates), 5, interval=0.02, describe="the follower leading")
    took = time.monotonic() - released_at
    sampler.finish()
    assert second != first
    assert took <= TIMING.retry_period + 1.0, f"hand-over took {took:.2f}s after the release"
    assert lease_holder(k8s.client, lease) == second


def test_a_leader_cut_off_from_the_apiserver_gives_up_before_the_follower_takes_over(
        pair: tuple[dict[str, Candidate], str], k8s: Cluster) -> None:
    candidates, lease = pair
    sampler, first = start_election(candidates)
    # Every request of the leader now meets a closed port, as if the network dropped it.
    candidates[first].elector.kube.client.configuration.host = f"https://127.0.0.1:{free_port()}"
    cut_at = time.monotonic()
    second = wait_for(lambda: next((n for n, c in candidates.items() if n != first and c.elector.leading()), None),
                      TIMING.lease_duration + 5, interval=0.02, describe="the follower leading")
    sampler.finish()
    gave_up, took_over = sampler.until[first] - cut_at, sampler.since[second] - cut_at
    assert gave_up <= TIMING.renew_deadline + 0.1, f"the cut-off leader led {gave_up:.2f}s on"
    assert took_over <= TIMING.lease_duration + TIMING.retry_period + 1.0, f"took over after {took_over:.2f}s"
    assert took_over > gave_up
    assert lease_holder(k8s.client, lease) == second
