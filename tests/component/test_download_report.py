"""KubernetesStatusReporter against a loopback HTTP server standing in for the apiserver's status endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kubernetes
import pytest

from modelcache_operator.api.v1alpha2 import DownloadReport
from modelcache_operator.downloader import KubernetesStatusReporter


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []
        self.status = 200


@pytest.fixture
def apiserver() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_PATCH(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            auth = self.headers.get("Authorization", "")
            rec.calls.append((self.path, self.headers["Content-Type"], auth, body))
            data = json.dumps({"kind": "ModelCache"}).encode()
            self.send_response(rec.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", rec
    server.shutdown()
    server.server_close()


def client(url: str) -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    cfg.host = url
    return kubernetes.client.ApiClient(cfg)


def test_merge_patches_the_status_subresource_and_throttles(apiserver: tuple[str, Recorder]) -> None:
    url, rec = apiserver
    reporter = KubernetesStatusReporter(client(url), "ns1", "llama", min_interval=60)
    reporter.send(DownloadReport(jobName="job-1", state="Downloading", bytesDone=5, bytesTotal=10))
    # Throttled: within min_interval, not forced, not terminal.
    reporter.send(DownloadReport(jobName="job-1", state="Downloading", bytesDone=6, bytesTotal=10))
    reporter.send(DownloadReport(jobName="job-1", state="Downloading", bytesDone=7), force=True)
    reporter.send(DownloadReport(jobName="job-1", state="Published", bytesDone=10, format="safetensors"))
    status_path = "/apis/modelcache.dev/v1alpha2/namespaces/ns1/modeldownloads/llama/status"
    assert [c[0] for c in rec.calls] == [status_path] * 3
    assert {c[1] for c in rec.calls} == {"application/merge-patch+json"}
    assert [c[3]["status"]["download"]["bytesDone"] for c in rec.calls] == [5, 7, 10]
    assert rec.calls[-1][3] == {"status": {"download": {
        "jobName": "job-1", "state": "Published", "bytesDone": 10, "bytesTotal": 0, "filesDone": 0,
        "filesTotal": 0, "bytesPerSecond": 0, "format": "safetensors"}}}


def test_apiserver_errors_never_raise(apiserver: tuple[str, Recorder],
                                      caplog: pytest.LogCaptureFixture) -> None:
    url, rec = apiserver
    rec.status = 500
    reporter = KubernetesStatusReporter(client(url), "ns1", "llama")
    reporter.send(DownloadReport(jobName="j", state="Failed", reason="NotFound"))
    assert len(rec.calls) == 1
    assert "HTTP 500" in caplog.text
    dead = KubernetesStatusReporter(client("http://127.0.0.1:1"), "ns1", "llama")
    dead.send(DownloadReport(jobName="j", state="Published"))
    assert "Could not report status" in caplog.text
