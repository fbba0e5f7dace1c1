"""Acting as a ServiceAccount (a TokenRequest token): as a kubeconfig, for running the operator or the
downloader with exactly the permissions they are granted, or as an API client."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import yaml

from modelcache_devcluster.cluster import LocalCluster
from tests.support.kube import Cluster


def serviceaccount_token(k8s: Cluster, namespace: str, serviceaccount: str, expiration_seconds: int = 3600) -> str:
    return str(k8s.core.create_namespaced_service_account_token(
        serviceaccount, namespace, {"spec": {"expirationSeconds": expiration_seconds}}).status.token)


def serviceaccount_client(k8s: Cluster, cluster: LocalCluster, namespace: str,
                          serviceaccount: str) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration()
    config.host = cluster.state.server
    config.ssl_ca_cert = str(cluster.state.pki / "ca.crt")
    config.api_key = {"authorization": f"Bearer {serviceaccount_token(k8s, namespace, serviceaccount, 600)}"}
    return kubernetes.client.ApiClient(config)


def serviceaccount_kubeconfig(k8s: Cluster, cluster: LocalCluster, namespace: str, serviceaccount: str,
                              path: Path, expiration_seconds: int = 3600) -> Path:
    token = serviceaccount_token(k8s, namespace, serviceaccount, expiration_seconds)
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
