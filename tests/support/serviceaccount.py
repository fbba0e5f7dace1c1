"""A kubeconfig that authenticates as a ServiceAccount (a TokenRequest token), for running the operator
with exactly the permissions the chart grants."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelcache_devcluster.cluster import LocalCluster
from tests.support.kube import Cluster


def serviceaccount_kubeconfig(k8s: Cluster, cluster: LocalCluster, namespace: str, serviceaccount: str,
                              path: Path, expiration_seconds: int = 3600) -> Path:
    token = k8s.core.create_namespaced_service_account_token(
        serviceaccount, namespace, {"spec": {"expirationSeconds": expiration_seconds}}).status.token
    user = f"system:serviceaccount:{namespace}:{serviceaccount}"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": cluster.state.server, "certificate-authority": str(cluster.state.pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": user}}],
        "current-context": "sa",
    }))
    return path
