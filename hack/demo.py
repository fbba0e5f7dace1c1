"""`make demo`: the local control plane with its real node, the operator installed by Helm as a Pod, a real
model downloaded by a Job in a container, and a StatefulSet of serving pods injected, prewarmed and Ready.
See tests/support/node_demo_flow.py for the flow; tests/integration/test_demo_on_node.py runs the same one."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the demo reuses the test hub and flows from tests/

from tests.support.node_demo_flow import DemoNames, Steps, demo_on_node  # noqa: E402
from tests.support.real_node import build_images  # noqa: E402
from tests.support.real_node_flow import client_for  # noqa: E402

from modelcache_devcluster.binaries import ensure_binaries  # noqa: E402
from modelcache_devcluster.cluster import LocalCluster  # noqa: E402
from modelcache_devcluster.node import ensure_node_binaries  # noqa: E402

STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[demo {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "modelcache-operator" / "demo")
    parser.add_argument("--replicas", type=int, default=2, help="serving pods in the StatefulSet")
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster, the operator and the demo's objects running afterwards")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("make demo runs a real kubelet node (containerd, runc, a bridge, iptables): run it as root",
              file=sys.stderr)
        return 1
    steps = Steps(say)
    with steps.step("binaries and images (cached; tens of minutes cold)"):
        say("building or reusing the control-plane binaries, containerd and the images")
        binaries = ensure_binaries()
        ensure_node_binaries()
        images = build_images()
    workdir: Path = args.workdir
    if (workdir / "cluster" / "cluster.json").exists():
        LocalCluster(binaries, workdir / "cluster").down()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    cluster = LocalCluster(binaries, workdir / "cluster", real_node=True,
                           node_images=[images[name].archive for name in ("pause", "operator", "serving")])
    try:
        with steps.step("control plane and real node up"):
            say("starting etcd, kube-apiserver, controller manager, scheduler, kwok, and the real node "
                "(containerd + runc + kubelet), importing the images into its containerd")
            cluster.up(timeout=180)
        with demo_on_node(cluster, client_for(cluster), workdir, steps, DemoNames(), args.replicas,
                          teardown=False) as (_, result):
            say(f"done: ModelCache Ready at {result.cache['status']['resolvedRevision'][:12]}, "
                f"{len(result.pods)} serving pods injected, prewarmed and Ready ({result.resident:.0%} resident)")
        say("step timings:\n" + steps.table())
    finally:
        if args.keep:
            say(f"cluster left running; to look around:\n  export KUBECONFIG={cluster.state.kubeconfig} "
                f"PATH={binaries.kubectl.parent}:$PATH\n  kubectl get mc,pods -n {DemoNames().namespace}\n"
                f"stop it with: .venv/bin/modelcache-devcluster --state-dir {workdir / 'cluster'} down")
        else:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
