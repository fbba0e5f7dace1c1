"""Status reporting: the downloader patches status.download of its ModelDownload."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from modelcache_operator.api.v1alpha2 import DOWNLOAD_PLURAL, GROUP, VERSION, DownloadReport

if TYPE_CHECKING:
    import kubernetes

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"Published", "Failed"})


class Reporter(Protocol):
    def send(self, report: DownloadReport, force: bool = False) -> None: ...


class NullReporter:
    """For runs outside a cluster (MC_REPORT=none)."""

    def send(self, report: DownloadReport, force: bool = False) -> None:
        return None


class KubernetesStatusReporter:
    """JSON-merge-patches `status.download` on the modeldownloads/status subresource.

    Throttled to one patch per `min_interval` seconds unless forced or terminal (Published, Failed); a
    throttled report is dropped, the next one carries the newer numbers. Errors are logged and never
    raised: losing a progress report must not fail a download.
    """

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str, name: str,
                 min_interval: float = 3.0) -> None:
        import kubernetes  # noqa: PLC0415  (slow; the downloader imports it only when it reports)

        self._api = kubernetes.client.CustomObjectsApi(api_client)
        self._api_exception = kubernetes.client.ApiException
        self._namespace = namespace
        self._name = name
        self._min_interval = min_interval
        self._last_sent = float("-inf")
        self._lock = threading.Lock()

    def send(self, report: DownloadReport, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not (force or report.state in TERMINAL_STATES) and now - self._last_sent < self._min_interval:
                return
            self._last_sent = now
            body = {"status": {"download": report.model_dump(mode="json", exclude_none=True)}}
            try:
                self._api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, self._namespace, DOWNLOAD_PLURAL, self._name, body,
                    _content_type="application/merge-patch+json", _request_timeout=10)
            except self._api_exception as e:
                # str(e) would include the response headers; status and reason are enough and hold no secrets.
                log.warning("Could not report status to %s/%s: HTTP %s %s", self._namespace, self._name,
                            e.status, e.reason)
            except Exception as e:
                log.warning("Could not report status to %s/%s: %s", self._namespace, self._name,
                            type(e).__name__)


def load_api_client() -> kubernetes.client.ApiClient:
    """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config."""
    import kubernetes  # noqa: PLC0415  (slow; see KubernetesStatusReporter)

    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient()
