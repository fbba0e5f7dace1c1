"""The downloader's apiserver client in a pod: the store's HTTPS_PROXY (downloadJob env) reaches the hub
client, never the status reports, which go straight to the cluster's own Service. Outside a pod (a
kubeconfig), the environment's proxy is honoured as every Kubernetes client does."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest

from modelcache_operator.downloader.report import load_api_client

PROXY = "http://proxy.corp:3128"


@pytest.fixture(autouse=True)
def default_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a config sets the library's process-wide default: put the previous one back afterwards."""
    monkeypatch.setattr(kubernetes.client.Configuration, "_default", kubernetes.client.Configuration._default)


def test_in_a_pod_the_apiserver_is_reached_without_the_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("t0ken")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("NO_PROXY", ".svc")
    # What the library does by itself with this environment: the reports would go to the proxy.
    assert kubernetes.client.Configuration(host="https://10.0.0.1:443").proxy == PROXY

    client = load_api_client()
    assert client.configuration.host == "https://10.0.0.1:443"
    assert client.configuration.proxy is None


def test_with_a_kubeconfig_the_environments_proxy_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://apiserver.corp:6443', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    client = load_api_client()
    assert (client.configuration.host, client.configuration.proxy) == ("https://apiserver.corp:6443", PROXY)
