"""Status reporting: the downloader patches status.download of its ModelDownload."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

from modelcache_operator.api.names import DOWNLOAD_PLURAL, GROUP, VERSION

from .errors import NetworkError

if TYPE_CHECKING:
    import kubernetes

    from modelcache_operator.api.v1alpha2 import DownloadReport

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

    def _status(self) -> dict[str, Any]:
        try:
            body = cast(dict[str, Any], self._api.get_namespaced_custom_object_status(
                GROUP, VERSION, self._namespace, DOWNLOAD_PLURAL, self._name, _request_timeout=10))
        except self._api_exception as e:
            raise NetworkError(f"reading the status of {self._namespace}/{self._name}: HTTP {e.status} "
                               f"{e.reason}") from None
        return dict(body.get("status") or {})

    def recorded_pin(self) -> str | None:
        """The commit an earlier pod or Job of this download resolved the revision to: the operator's pin,
        else the last report. A download whose status cannot be read fails (and is retried) rather than
        resolving the branch again."""
        status = self._status()
        pinned = status.get("resolvedRevision") or (status.get("download") or {}).get("resolvedRevision")
        return str(pinned) if pinned else None

    def send_upstream(self, revision: str, job_name: str, checked_at: str) -> None:
        """A check Job's result, in `status.upstream`; unlike progress, a lost one fails the check."""
        body = {"status": {"upstream": {"revision": revision, "checkedAt": checked_at, "jobName": job_name}}}
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self._namespace, DOWNLOAD_PLURAL, self._name, body,
                _content_type="application/merge-patch+json", _request_timeout=10)
        except self._api_exception as e:
            raise NetworkError(f"reporting the upstream check to {self._namespace}/{self._name}: HTTP "
                               f"{e.status} {e.reason}") from None


def load_api_client() -> kubernetes.client.ApiClient:
    """In-cluster config (never through a proxy) when running in a pod, else KUBECONFIG / ~/.kube/config."""
    import kubernetes  # noqa: PLC0415  (slow; see KubernetesStatusReporter)

    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        return kubernetes.client.ApiClient()
    # In a pod the apiserver is the cluster's own Service, reached directly: the HTTPS_PROXY of a store's
    # downloadJob env is for the hub, and the client would otherwise send the status reports to that proxy.
    configuration = kubernetes.client.Configuration.get_default_copy()
    configuration.proxy = None
    return kubernetes.client.ApiClient(configuration)
