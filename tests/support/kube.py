"""Small helpers for tests against the real apiserver."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.names import LABEL_DOWNLOAD, LABEL_ROLE

T = TypeVar("T")
# Where the operator under test keeps shared downloads and the stores' writable claims.
OPERATOR_NAMESPACE = "modelcache-system"
NFS_SERVER = "10.0.0.2"  # nothing mounts it: kwok nodes run no volumes


def nfs_store_manifest(name: str, namespaces: Sequence[str], path: str | None = None,
                       **spec: Any) -> dict[str, Any]:
    """A ModelStore on an NFS export (its own root, /exports/<name>, unless `path` is given) that exactly
    `namespaces` may use."""
    selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                      "values": list(namespaces)}]}
    return {"apiVersion": api.API_VERSION, "kind": api.STORE_KIND, "metadata": {"name": name},
            "spec": {"nfs": {"server": NFS_SERVER, "path": path or f"/exports/{name}"},
                     "namespaceSelector": selector, "capacity": "100Gi", **spec}}


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.25,
             describe: str = "condition", diagnostics: Callable[[], str] | None = None) -> T:
    """Polls until probe returns something truthy; fails with what was last seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    extra = f"\n{diagnostics()}" if diagnostics else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {describe}; last value: {last!r}{extra}")


def refusal(attempt: Callable[[], Any]) -> tuple[int, str]:
    """(HTTP status, body) of an API call that must be refused; fails the test if it was allowed."""
    try:
        attempt()
    except ApiException as error:
        return int(error.status), str(error.body)
    raise AssertionError("the attempt was allowed")


class Cluster:
    """Typed access to the resources the tests touch."""

    def __init__(self, client: kubernetes.client.ApiClient):
        self.client = client
        self.core = kubernetes.client.CoreV1Api(client)
        self.batch = kubernetes.client.BatchV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
        except ApiException as error:
            if error.status != 409:
                raise

    def create_store(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.create_cluster_custom_object(
            api.GROUP, api.VERSION, api.STORE_PLURAL, manifest))

    def get_store(self, name: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self.custom.get_cluster_custom_object(
                api.GROUP, api.VERSION, api.STORE_PLURAL, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def delete_store(self, name: str) -> None:
        try:
            self.custom.delete_cluster_custom_object(api.GROUP, api.VERSION, api.STORE_PLURAL, name)
        except ApiException as error:
            if error.status != 404:
                raise

    def wait_store_ready(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            store = self.get_store(name)
            return store if store and (store.get("status") or {}).get("phase") == "Ready" else None
        return wait_for(probe, timeout, describe=f"ModelStore {name} Ready",
                        diagnostics=lambda: f"store: {self.get_store(name)}")

    def get_download(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self.custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.DOWNLOAD_PLURAL, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def downloads(self, store: str | None = None) -> list[dict[str, Any]]:
        items = self.custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.DOWNLOAD_PLURAL)["items"]
        return [d for d in items if store is None or d["spec"]["store"] == store]

    def download_of(self, cache: dict[str, Any]) -> dict[str, Any] | None:
        """The ModelDownload a cache's status points at."""
        ref = (cache.get("status") or {}).get("downloadRef")
        return self.get_download(ref["namespace"], ref["name"]) if ref else None

    def wait_download(self, namespace: str, name: str, timeout: float = 60.0, not_named: str | None = None,
                      diagnostics: Callable[[], str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(cache, ModelDownload) once the cache's status names a download (other than `not_named`) that
        exists."""
        def probe() -> tuple[dict[str, Any], dict[str, Any]] | None:
            cache = self.get_cache(namespace, name) or {}
            ref = (cache.get("status") or {}).get("downloadRef") or {}
            download = self.download_of(cache) if ref and ref["name"] != not_named else None
            return (cache, download) if download is not None else None
        return wait_for(probe, timeout, describe=f"ModelCache {namespace}/{name} with its ModelDownload",
                        diagnostics=lambda: f"cache: {self.get_cache(namespace, name)}"
                        + (f"\n{diagnostics()}" if diagnostics else ""))

    def create_cache(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        result = self.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)
        return cast(dict[str, Any], result)

    def get_cache(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result = self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
            return cast(dict[str, Any], result)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_cache(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name, patch)

    def delete_cache(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)

    def wait_phase(self, namespace: str, name: str, phase: str, timeout: float = 60.0,
                   diagnostics: Callable[[], str] | None = None) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            cache = self.get_cache(namespace, name)
            return cache if cache and (cache.get("status") or {}).get("phase") == phase else None
        return wait_for(probe, timeout, describe=f"ModelCache {namespace}/{name} phase {phase}",
                        diagnostics=lambda: f"cache: {self.get_cache(namespace, name)}"
                        + (f"\n{diagnostics()}" if diagnostics else ""))

    def condition(self, cache: dict[str, Any], kind: str) -> dict[str, Any]:
        conditions = (cache.get("status") or {}).get("conditions") or []
        return next(c for c in conditions if c["type"] == kind)

    def download_jobs(self, download: str | None = None) -> list[Any]:
        """Download Jobs in every namespace, or only those of one ModelDownload."""
        selector = f"{LABEL_ROLE}=downloader" + (f",{LABEL_DOWNLOAD}={download}" if download else "")
        return list(self.batch.list_job_for_all_namespaces(label_selector=selector).items)

    def events(self, namespace: str) -> list[Any]:
        return list(self.core.list_namespaced_event(namespace).items)
