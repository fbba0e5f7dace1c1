"""Pinned versions of the control-plane binaries and where their cached builds live."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.21.4"

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-bins.sh"


def cache_root() -> Path:
    default = Path.home() / ".cache" / "modelcache-operator" / "bins"
    return Path(os.environ.get("MODELCACHE_BIN_CACHE", default))


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kubelet: Path
    kwok: Path
    kwok_stages: Path
    helm: Path

    @classmethod
    def at(cls, root: Path) -> Binaries:
        k8s = root / f"kubernetes-{K8S_VERSION}"
        kwok = root / f"kwok-{KWOK_VERSION}"
        return cls(
            etcd=root / f"etcd-{ETCD_VERSION}" / "etcd",
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kube_scheduler=k8s / "kube-scheduler",
            kubectl=k8s / "kubectl",
            kubelet=k8s / "kubelet",
            kwok=kwok / "kwok",
            kwok_stages=kwok / "stage",
            helm=root / f"helm-{HELM_VERSION}" / "helm",
        )

    def missing(self) -> list[Path]:
        return [p for p in vars(self).values() if not p.exists()]


def build_env() -> dict[str, str]:
    return {
        **os.environ,
        "K8S_VERSION": K8S_VERSION,
        "ETCD_VERSION": ETCD_VERSION,
        "KWOK_VERSION": KWOK_VERSION,
        "HELM_VERSION": HELM_VERSION,
        "MODELCACHE_BIN_CACHE": str(cache_root()),
    }


def ensure_binaries() -> Binaries:
    """Returns the cached binaries, building the missing ones first (tens of minutes when cold)."""
    binaries = Binaries.at(cache_root())
    if binaries.missing():
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, env=build_env())
    missing = binaries.missing()
    if missing:
        raise RuntimeError(f"control-plane binaries still missing after the build: {missing}")
    return binaries
