"""A store's downloadJob network options in the real download Job container on the real node: the hub serves
TLS signed by a test CA and its name resolves nowhere but in an HTTP CONNECT proxy on the host, so the Job
reaches it only through HTTPS_PROXY (the store's env) and trusts it only through the CA bundle ConfigMap (the
store's caBundle). Real node: wrap in `flock /tmp/mc-real-node.lock`."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelcache_devcluster.node import GATEWAY
from modelcache_operator.downloader.manifest import verify_manifest
from tests.hubs import package_model_files
from tests.hubs.huggingface import HuggingFaceHub
from tests.hubs.network import HUB_HOST, ConnectProxy, make_test_ca
from tests.integration.test_stores_real_node import (
    MINILM,
    Env,
    env,  # noqa: F401  (fixture)
)
from tests.support.kube import OPERATOR_NAMESPACE
from tests.support.real_node_flow import RealNodeCluster

pytestmark = pytest.mark.integration
CA_CONFIGMAP = "corp-ca"


@dataclass(frozen=True)
class Network:
    hub: HuggingFaceHub
    proxy: ConnectProxy


@pytest.fixture(scope="module")
def network(env: Env, real_cluster: RealNodeCluster) -> Iterator[Network]:  # noqa: F811
    ca = make_test_ca(real_cluster.workdir / f"pki-{uuid.uuid4().hex[:6]}")
    hub = HuggingFaceHub(host=GATEWAY, tls=ca.server_context(), url_host=HUB_HOST)
    hub.add_repo(MINILM, dict(package_model_files()))
    hub.start()
    proxy = ConnectProxy(routes={HUB_HOST: GATEWAY}, host=GATEWAY).start()
    # Shared downloads run in the operator's namespace: the CA bundle lives there (api/job_options.py).
    env.k8s.core.create_namespaced_config_map(OPERATOR_NAMESPACE, {
        "metadata": {"name": CA_CONFIGMAP}, "data": {"bundle.pem": ca.ca_cert.read_text()}})
    try:
        yield Network(hub, proxy)
    finally:
        env.k8s.core.delete_namespaced_config_map(CA_CONFIGMAP, OPERATOR_NAMESPACE)
        proxy.stop()
        hub.stop()


def test_the_download_job_reaches_a_tls_hub_only_through_the_proxy(env: Env, network: Network) -> None:  # noqa: F811
    store = env.store("proxied", downloadJob={
        "env": [{"name": "HTTPS_PROXY", "value": network.proxy.url}, {"name": "NO_PROXY", "value": ".svc"}],
        "caBundle": {"name": CA_CONFIGMAP, "key": "bundle.pem"}})
    namespace = env.namespace("proxied")
    env.cache(namespace, "model", MINILM, store, endpoint=network.hub.url)
    cache = env.ready(namespace, "model")

    revision_dir = env.root(store) / "hf" / MINILM / cache["status"]["revisionPath"]
    manifest = verify_manifest(revision_dir)
    shipped = package_model_files()
    assert {f.path: f.sha256 for f in manifest.files} == {
        path: hashlib.sha256(Path(source).read_bytes()).hexdigest() for path, source in shipped.items()}
    # Every byte came through the proxy's tunnel to the hub's name, and nothing else asked it for a tunnel.
    port = network.hub.url.rsplit(":", 1)[1]
    assert set(network.proxy.tunnels) == {f"{HUB_HOST}:{port}"}, network.proxy.tunnels
    assert network.proxy.refused == []
    assert all(network.hub.bytes_served[path] >= Path(source).stat().st_size for path, source in shipped.items())
