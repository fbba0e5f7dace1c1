"""The downloader's keep-alive connections against the loopback hub and its CDN host: one connection per
worker and host however many requests, a fresh one for what the server closed, redirects without the token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelcache_operator.downloader.connections import Connections
from modelcache_operator.downloader.errors import DownloadError, NotFound, Unauthorized
from modelcache_operator.downloader.httpfetch import make_connections
from tests.hubs.cdn import CdnHost
from tests.hubs.huggingface import HuggingFaceHub

TOKEN = "hf_keepalive_secret"
REPO = "acme/small"
BODY = bytes(range(256)) * 8192  # 2 MiB: an LFS file, so the CDN host serves it
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def cdn() -> Iterator[CdnHost]:
    with CdnHost() as c:
        yield c


@pytest.fixture
def hub(cdn: CdnHost) -> Iterator[HuggingFaceHub]:
    h = HuggingFaceHub(token=TOKEN, cdn=cdn)
    h.add_repo(REPO, {"config.json": b'{"a": 1}', "model.safetensors": BODY})
    with h:
        yield h


@pytest.fixture
def client() -> Iterator[Connections]:
    c = make_connections()
    yield c
    c.close()


def resolve(hub: HuggingFaceHub, path: str) -> str:
    return f"{hub.url}/{REPO}/resolve/main/{path}"


def get_range(client: Connections, url: str, first: int, last: int, auth: dict[str, str] = AUTH) -> bytes:
    with client.get(url, headers={"Range": f"bytes={first}-{last}"}, auth=auth, timeout=10, what="test") as resp:
        assert resp.status == 206
        return resp.read()


def test_many_requests_to_one_host_share_one_connection(hub: HuggingFaceHub, client: Connections) -> None:
    url = resolve(hub, "config.json")
    for first in range(4):
        assert get_range(client, url, first, first + 1) == b'{"a": 1}'[first:first + 2]
    assert (client.opened, hub.connections_accepted) == (1, 1)


def test_a_redirect_drops_the_token_and_both_hosts_keep_their_connection(
        hub: HuggingFaceHub, cdn: CdnHost, client: Connections) -> None:
    url = resolve(hub, "model.safetensors")
    parts = [get_range(client, url, first, first + (1 << 20) - 1) for first in (0, 1 << 20)]
    assert b"".join(parts) == BODY
    assert cdn.auth_headers_seen == [] and hub.auth_headers_seen == [f"Bearer {TOKEN}"] * 2
    assert (client.opened, hub.connections_accepted, cdn.connections_accepted) == (2, 1, 1)


def test_a_body_left_unread_closes_its_connection(hub: HuggingFaceHub, client: Connections) -> None:
    url = resolve(hub, "model.safetensors")
    with client.get(url, headers={}, auth=AUTH, timeout=10, what="test") as resp:
        assert resp.read(1024) == BODY[:1024]
    assert get_range(client, url, 0, 9) == BODY[:10]
    assert client.opened == 3  # the hub's connection was reused; the abandoned CDN one was not


def test_a_connection_the_server_closed_while_idle_is_replaced(hub: HuggingFaceHub, client: Connections) -> None:
    hub.faults.close_idle = True  # closes after each response, without `Connection: close`
    url = resolve(hub, "config.json")
    for first in range(3):
        assert get_range(client, url, first, first) == b'{"a": 1}'[first:first + 1]
    assert (client.opened, hub.connections_accepted) == (3, 3)


@pytest.mark.parametrize(("path", "auth", "error"),
                         [("missing.bin", AUTH, NotFound), ("config.json", {}, Unauthorized)], ids=["404", "401"])
def test_error_statuses_map_to_the_downloader_errors(hub: HuggingFaceHub, client: Connections, path: str,
                                                     auth: dict[str, str], error: type[DownloadError]) -> None:
    with pytest.raises(error), client.get(resolve(hub, path), headers={}, auth=auth, timeout=10, what="test"):
        pass
    assert get_range(client, resolve(hub, "config.json"), 0, 0) == b"{"
    assert client.opened == 1  # the short error body was read, so the connection served the next request


def test_only_http_and_https_are_fetched(client: Connections) -> None:
    with pytest.raises(DownloadError, match="not http"), \
            client.get("file:///etc/passwd", headers={}, auth={}, timeout=1, what="test"):
        pass
    assert client.opened == 0
