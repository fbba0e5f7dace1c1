"""`make demo`: a ModelCache from apply to Ready, and a serving pod injected and prewarmed, on the local
control plane. See tests/support/demo_flow.py for what is real and what kwok plays."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the demo reuses the test hub and fixtures from tests/

from tests.support.demo_flow import run_demo  # noqa: E402

from modelcache_devcluster.binaries import ensure_binaries  # noqa: E402
from modelcache_devcluster.cluster import LocalCluster  # noqa: E402

STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[demo {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "modelcache-operator" / "demo")
    parser.add_argument("--keep", action="store_true", help="leave the control plane running afterwards")
    args = parser.parse_args()
    say("building or reusing the control-plane binaries (tens of minutes on a cold machine, seconds after)")
    binaries = ensure_binaries()
    workdir: Path = args.workdir
    if (workdir / "cluster" / "cluster.json").exists():
        LocalCluster(binaries, workdir / "cluster").down()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    say("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake GPU nodes)")
    cluster = LocalCluster(binaries, workdir / "cluster")
    cluster.up()
    try:
        result = run_demo(cluster, workdir, say)
        say(f"done: ModelCache Ready at revision {result.cache['status']['resolvedRevision']}, "
            f"pod {result.pod.metadata.name} injected and prewarmed ({result.resident:.0%} resident)")
    finally:
        if args.keep:
            say(f"control plane left running: export KUBECONFIG={cluster.state.kubeconfig}; "
                f"stop it with: .venv/bin/modelcache-devcluster --state-dir {workdir / 'cluster'} down")
        else:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
