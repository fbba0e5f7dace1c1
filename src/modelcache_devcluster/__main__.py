"""`modelcache-devcluster build|up|down|env`: the local control plane from the command line."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .binaries import ensure_binaries
from .cluster import ClusterState, LocalCluster, teardown
from .images import BuiltImage, ImageBuilder
from .node import ensure_node_binaries

DEFAULT_STATE_DIR = Path.home() / ".cache" / "modelcache-operator" / "cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelcache-devcluster", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="where PKI, logs, etcd data and the kubeconfig live")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or reuse) the cached control-plane binaries")
    up = sub.add_parser("up", help="start the control plane with fake GPU nodes, print how to use it")
    for command in (build, up):
        command.add_argument("--real-node", action="store_true",
                             help="also a real kubelet node (containerd, runc, CNI) and its images; needs root")
    sub.add_parser("down", help="stop every process of the control plane and delete its state")
    sub.add_parser("env", help="print the shell exports for a running control plane")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir

    if args.command == "build":
        binaries = ensure_binaries()
        print(f"binaries ready: {binaries.kube_apiserver.parent.parent}")
        if args.real_node:
            node = ensure_node_binaries()
            print(f"real-node runtime ready: {node.containerd.parent}")
            for image in node_images():
                print(f"image {image.name}: {image.archive}")
        return 0
    if args.command == "up":
        if (state_dir / "cluster.json").exists():
            print(f"a control plane is already recorded in {state_dir}; run `down` first", file=sys.stderr)
            return 1
        binaries = ensure_binaries()
        images = [image.archive for image in node_images()] if args.real_node else []
        if args.real_node:
            ensure_node_binaries()
        state = LocalCluster(binaries, state_dir, real_node=args.real_node, node_images=images).up()
        print_env(state, binaries.kubectl.parent, binaries.helm.parent)
        return 0
    if args.command == "down":
        if (state_dir / "cluster.json").exists():
            teardown(ClusterState.load(state_dir))
        shutil.rmtree(state_dir, ignore_errors=True)
        print(f"stopped; removed {state_dir}")
        return 0
    binaries = ensure_binaries()
    print_env(ClusterState.load(state_dir), binaries.kubectl.parent, binaries.helm.parent)
    return 0


def node_images() -> list[BuiltImage]:
    """The sandbox image, the python base and the project's own image (built once, then cached)."""
    builder = ImageBuilder()
    return [builder.pause(), builder.base(), builder.operator()]


def print_env(state: ClusterState, kubectl_dir: Path, helm_dir: Path) -> None:
    print(f"# local control plane at {state.server}; logs in {state.state_dir}/logs")
    print(f"export KUBECONFIG={state.kubeconfig}")
    print(f"export PATH={kubectl_dir}:{helm_dir}:$PATH")


if __name__ == "__main__":
    sys.exit(main())
