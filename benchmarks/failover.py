"""Reconciler failover: how long no ModelCache is reconciled when the operator goes away.

    flock /tmp/modelcache-bench.lock .venv/bin/python benchmarks/failover.py --rounds 3

Its own LocalCluster; operators as host processes (tests/support/operator.py), with the default Lease
timings (15 s lease, 10 s renew deadline, 2 s retry). The gap is measured end to end: the moment the
leader is stopped, a new ModelCache is created (no webhooks are registered, so the create needs no
replica), and the gap ends when that cache has a status, its first reconcile.

- `sigterm`: two replicas; the leader gets SIGTERM (a rolling upgrade, a drain), releases the Lease, and
  the follower takes over at its next retry.
- `sigkill`: two replicas; the leader is SIGKILLed (a crash, a lost node); the follower waits for the Lease
  to expire.
- baseline, same run: the old chart's single replica with `Recreate`: the one operator gets SIGTERM and a
  new process starts at once. On a cluster a new pod also waits for scheduling and its container, so this
  host-process baseline is a lower bound.

Also printed: how long the follower took to hold the Lease (sigterm, sigkill).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.kube import OPERATOR_NAMESPACE, Cluster, wait_for
from tests.support.operator import OperatorProcess

from modelcache_devcluster.binaries import ensure_binaries
from modelcache_devcluster.cluster import LocalCluster
from modelcache_operator.api import v1alpha2 as api

CRD_DIR = Path(__file__).resolve().parents[1] / "crds"
NAMESPACE = "bench-failover"


def probe_cache(name: str) -> dict[str, Any]:
    # No store exists: the first reconcile writes a Pending status (StoreNotFound), which is what we time.
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
            "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}, "store": "absent"}}


def reconciled(k8s: Cluster, name: str) -> bool:
    body = k8s.get_cache(NAMESPACE, name) or {}
    return bool((body.get("status") or {}).get("phase"))


def leader_of(replicas: list[OperatorProcess]) -> OperatorProcess:
    def one() -> OperatorProcess | None:
        leaders = [r for r in replicas if r.process is not None and r.process.poll() is None and r.leading()]
        return leaders[0] if len(leaders) == 1 else None
    return wait_for(one, 60, interval=0.1, describe="one leader")


def gap_after(k8s: Cluster, name: str, stop: Any, after: Any = None, follower: OperatorProcess | None = None
              ) -> dict[str, float]:
    """Stops the leader with `stop`, creates a cache at once, runs `after` (e.g. start a new process); the
    seconds until the cache is reconciled, and until `follower` leads."""
    stop()
    started = time.monotonic()
    k8s.create_cache(NAMESPACE, probe_cache(name))
    if after is not None:
        after()
    result: dict[str, float] = {}
    while "reconciled" not in result:
        if follower is not None and "leading" not in result and follower.leading():
            result["leading"] = time.monotonic() - started
        if reconciled(k8s, name):
            result["reconciled"] = time.monotonic() - started
        if time.monotonic() - started > 120:
            raise AssertionError(f"{name} not reconciled within 120 s")
        time.sleep(0.05)
    if follower is not None and "leading" not in result:
        result["leading"] = result["reconciled"]
    return result


def two_replicas(k8s: Cluster, kubeconfig: str, workdir: Path, rounds: int) -> dict[str, list[dict[str, float]]]:
    replicas = [OperatorProcess(kubeconfig, workdir / name, manage_webhooks=False, identity=name)
                for name in ("replica-a", "replica-b")]
    for replica in replicas:
        replica.start()
    results: dict[str, list[dict[str, float]]] = {"sigterm": [], "sigkill": []}
    try:
        for mode in ("sigterm", "sigkill"):
            for i in range(rounds):
                leader = leader_of(replicas)
                follower = next(r for r in replicas if r is not leader)
                stop = leader.stop if mode == "sigterm" else leader.kill
                results[mode].append(gap_after(k8s, f"{mode}-{i}", stop, follower=follower))
                leader.start()  # back as the follower
    finally:
        for replica in replicas:
            replica.stop()
    return results


def single_replica(k8s: Cluster, kubeconfig: str, workdir: Path, rounds: int) -> list[dict[str, float]]:
    operator = OperatorProcess(kubeconfig, workdir / "single", manage_webhooks=False, identity="single")
    operator.start()
    results = []
    try:
        for i in range(rounds):
            leader_of([operator])
            results.append(gap_after(k8s, f"recreate-{i}", operator.stop, after=operator.start))
    finally:
        operator.stop()
    return results


def summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    return {key: {"median": round(statistics.median(s[key] for s in samples), 2),
                  "max": round(max(s[key] for s in samples), 2), "all": [round(s[key], 2) for s in samples]}
            for key in samples[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mc-failover-"))
    cluster = LocalCluster(ensure_binaries(), workdir / "cluster")
    cluster.up()
    try:
        k8s = Cluster(kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=cluster.state.kubeconfig))
        cluster.install_crds(CRD_DIR)
        k8s.ensure_namespace(OPERATOR_NAMESPACE)
        k8s.ensure_namespace(NAMESPACE)
        kubeconfig = cluster.state.kubeconfig
        baseline = summary(single_replica(k8s, kubeconfig, workdir, args.rounds))
        ha = {mode: summary(samples) for mode, samples in
              two_replicas(k8s, kubeconfig, workdir, args.rounds).items()}
        base = baseline["reconciled"]["median"]
        results = {
            "machine": f"{platform.node()} {platform.machine()}, {platform.python_version()}",
            "rounds": args.rounds,
            "baseline_single_replica_recreate": baseline,
            "two_replicas": ha,
            "ratio_vs_baseline_median_gap": {mode: round(ha[mode]["reconciled"]["median"] / base, 2)
                                             for mode in ha},
        }
        text = json.dumps(results, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text)
    finally:
        cluster.down()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
