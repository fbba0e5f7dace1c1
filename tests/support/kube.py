"""Small helpers for tests against the real apiserver."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

from modelcache_operator.api import v1alpha1 as api

T = TypeVar("T")


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


class Cluster:
    """Typed access to the resources the tests touch."""

    def __init__(self, client: kubernetes.client.ApiClient):
        self.client = client
        self.core = kubernetes.client.CoreV1Api(client)
        self.batch = kubernetes.client.BatchV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

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

    def jobs(self, namespace: str, cache: str) -> list[Any]:
        items = self.batch.list_namespaced_job(namespace, label_selector=f"modelcache.dev/cache={cache}").items
        return list(items)

    def events(self, namespace: str) -> list[Any]:
        return list(self.core.list_namespaced_event(namespace).items)
