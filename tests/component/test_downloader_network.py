"""The downloader behind a corporate network's pieces: a hub on TLS signed by a private CA, reachable only
through an HTTP CONNECT proxy (its name resolves nowhere else). What a store's downloadJob options set in the
Job (HTTPS_PROXY and NO_PROXY env, the CA variables from the caBundle ConfigMap) is set here the same way, for
both hubs: the modelscope client's `requests` trusts only REQUESTS_CA_BUNDLE, the others SSL_CERT_FILE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache_operator.builders.job_options import CA_BUNDLE_DIR, ca_bundle_env
from modelcache_operator.downloader.errors import ExitCode
from tests.component.conftest import REPO, TOKEN, run_downloader
from tests.hubs import FakeHub
from tests.hubs.huggingface import HuggingFaceHub
from tests.hubs.modelscope import ModelScopeHub
from tests.hubs.network import HUB_HOST, ConnectProxy, PrivateCA, make_test_ca


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return make_test_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=[HuggingFaceHub, ModelScopeHub], ids=["hf", "ms"])
def tls_hub(request: pytest.FixtureRequest, ca: PrivateCA, model_files: dict[str, Path]) -> Iterator[FakeHub]:
    """Each hub type, its API and file bodies on TLS signed by the test CA, under a name only the proxy knows."""
    hub: FakeHub = request.param(token=TOKEN, tls=ca.server_context(), url_host=HUB_HOST)
    hub.add_repo(REPO, dict(model_files))
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    started = ConnectProxy(routes={HUB_HOST: "127.0.0.1"}).start()
    try:
        yield started
    finally:
        started.stop()


def proxied(proxy: ConnectProxy, ca: PrivateCA | None) -> dict[str, str]:
    """The env a Job gets; no downloader retries, so a refused hub fails once (the client's own retries remain)."""
    env = {"HTTPS_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.1", "MC_RETRIES": "0"}
    return {**env, **ca_bundle_env(str(ca.ca_cert))} if ca else env


def test_a_tls_hub_through_the_proxy_with_the_ca_bundle(tls_hub: FakeHub, proxy: ConnectProxy,
                                                        ca: PrivateCA, root: Path) -> None:
    assert ca_bundle_env()["REQUESTS_CA_BUNDLE"].startswith(f"{CA_BUNDLE_DIR}/")  # in the Job: the mounted file
    result = run_downloader(tls_hub, root, 180, **proxied(proxy, ca))
    assert result.code == 0, result.all_output
    assert (root / tls_hub.repos[REPO].sha / ".modelcache" / "manifest.json").is_file()
    port = tls_hub.url.rsplit(":", 1)[1]
    assert set(proxy.tunnels) == {f"{HUB_HOST}:{port}"} and len(proxy.tunnels) >= 2  # API and file bodies
    assert proxy.refused == []
    assert TOKEN not in result.all_output


def test_without_the_ca_bundle_the_hub_is_not_trusted(tls_hub: FakeHub, proxy: ConnectProxy,
                                                      root: Path) -> None:
    result = run_downloader(tls_hub, root, 180, **proxied(proxy, None))
    assert result.code == ExitCode.NETWORK, result.all_output
    assert "CERTIFICATE_VERIFY_FAILED" in result.all_output or "certificate verify failed" in result.all_output
    assert proxy.tunnels, "the request went through the proxy before TLS refused the hub"


def test_without_the_proxy_the_hub_is_unreachable(tls_hub: FakeHub, proxy: ConnectProxy, ca: PrivateCA,
                                                  root: Path) -> None:
    """NO_PROXY for the hub's name: the downloader goes direct, and the name resolves nowhere."""
    result = run_downloader(tls_hub, root, 180, **{**proxied(proxy, ca), "NO_PROXY": HUB_HOST})
    assert result.code == ExitCode.NETWORK, result.all_output
    assert proxy.tunnels == []
