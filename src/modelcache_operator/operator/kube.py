"""A thin Kubernetes client: server-side apply under one field manager, plus the few reads and deletes
the reconciler needs. Built on the kubernetes client's ApiClient so auth and TLS come from kubeconfig
or the in-cluster ServiceAccount."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from ..api import v1alpha2 as api
from ..api.names import FIELD_MANAGER

REQUEST_TIMEOUT_SECONDS = 60

# kind -> (path prefix, plural, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "PersistentVolume": ("/api/v1", "persistentvolumes", False),
    "Pod": ("/api/v1", "pods", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    api.KIND: (f"/apis/{api.API_VERSION}", api.PLURAL, True),
    api.STORE_KIND: (f"/apis/{api.API_VERSION}", api.STORE_PLURAL, False),
    api.DOWNLOAD_KIND: (f"/apis/{api.API_VERSION}", api.DOWNLOAD_PLURAL, True),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),  # leader election (lease.py)
    # Development only: the webhook process registers itself when MODELCACHE_WEBHOOK_MANAGED is set.
    "MutatingWebhookConfiguration": ("/apis/admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", False),
    "ValidatingWebhookConfiguration": ("/apis/admissionregistration.k8s.io/v1", "validatingwebhookconfigurations",
                                       False),
}


# Characters json.dumps must not \u-escape in an apply body: astral ones, whose JSON escapes are surrogate
# pairs, which the apiserver's YAML decoder refuses ("found invalid Unicode character escape code").
_ESCAPED_FOR_YAML = re.compile(r"[^\x00-\x7e\U00010000-\U0010ffff]")


def apply_body(manifest: dict[str, Any]) -> str:
    """JSON that the apply endpoint's YAML decoder reads back exactly: ASCII with \\u escapes as usual, but
    characters beyond the BMP (say an emoji in a user's allowPatterns) as raw UTF-8."""
    return _ESCAPED_FOR_YAML.sub(lambda c: f"\\u{ord(c.group()):04x}", json.dumps(manifest, ensure_ascii=False))


def load_api_client() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    client = kubernetes.client.ApiClient()
    client.user_agent = "modelcache-operator"
    return client


def is_not_found(error: ApiException) -> bool:
    return bool(error.status == 404)


class NotLeading(Exception):
    """A write refused because this replica no longer holds the leader Lease: the new leader reconciles."""


class Kube:
    def __init__(self, client: kubernetes.client.ApiClient, may_write: Callable[[], bool] = lambda: True):
        """may_write is the leader fence: checked before every request that is not a read."""
        self.client = client
        self.may_write = may_write

    def _path(self, kind: str, name: str | None, namespace: str | None, subresource: str | None = None) -> str:
        prefix, plural, namespaced = RESOURCES[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
        path = f"{path}/{name}" if name else path
        return f"{path}/{subresource}" if subresource else path

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
              query: list[tuple[str, str]] | None = None, *,
              timeout: float = REQUEST_TIMEOUT_SECONDS) -> dict[str, Any]:
        if method != "GET" and not self.may_write():
            raise NotLeading(f"{method} {path}: this replica does not hold the leader Lease")
        method, url, headers, payload, _ = self.client.param_serialize(
            method=method, resource_path=path, query_params=query or [], body=body,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"])
        response = self.client.call_api(method, url, header_params=headers, body=payload,
                                        _request_timeout=timeout)
        response.read()  # type: ignore[no-untyped-call]
        if response.status >= 400:
            raise ApiException(http_resp=response)
        result = json.loads(response.data or b"{}")
        return result if isinstance(result, dict) else {}

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply; returns the live object, status included."""
        meta = manifest["metadata"]
        path = self._path(manifest["kind"], meta["name"], meta.get("namespace"))
        return self._call("PATCH", path, body=apply_body(manifest), content_type="application/apply-patch+yaml",
                          query=[("fieldManager", FIELD_MANAGER), ("force", "true")])

    def get(self, kind: str, name: str, namespace: str | None = None,
            timeout: float = REQUEST_TIMEOUT_SECONDS) -> dict[str, Any] | None:
        try:
            return self._call("GET", self._path(kind, name, namespace), timeout=timeout)
        except ApiException as error:
            if is_not_found(error):
                return None
            raise

    def create(self, manifest: dict[str, Any], timeout: float = REQUEST_TIMEOUT_SECONDS) -> dict[str, Any]:
        """Fails with 409 when the object exists: for objects whose first writer wins (the Lease)."""
        path = self._path(manifest["kind"], None, manifest["metadata"].get("namespace"))
        return self._call("POST", path, body=manifest, timeout=timeout)

    def replace(self, manifest: dict[str, Any], timeout: float = REQUEST_TIMEOUT_SECONDS) -> dict[str, Any]:
        """A compare-and-swap on metadata.resourceVersion: fails with 409 if the object changed since."""
        meta = manifest["metadata"]
        return self._call("PUT", self._path(manifest["kind"], meta["name"], meta.get("namespace")), body=manifest,
                          timeout=timeout)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        try:
            self._call("DELETE", self._path(kind, name, namespace),
                       body={"propagationPolicy": "Background"})
        except ApiException as error:
            if not is_not_found(error):
                raise

    def patch_status(self, kind: str, namespace: str | None, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", self._path(kind, name, namespace, "status"), body={"status": status},
                          content_type="application/merge-patch+json")

    def annotate(self, kind: str, namespace: str | None, name: str, annotations: dict[str, str]) -> None:
        self._call("PATCH", self._path(kind, name, namespace), body={"metadata": {"annotations": annotations}},
                   content_type="application/merge-patch+json")

    def merge_patch(self, kind: str, namespace: str | None, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", self._path(kind, name, namespace), body=body,
                          content_type="application/merge-patch+json")

    def set_finalizers(self, kind: str, namespace: str | None, name: str, finalizers: list[str],
                       resource_version: str) -> None:
        # resourceVersion makes this a compare-and-swap: never drop someone else's concurrent finalizer.
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        self._call("PATCH", self._path(kind, name, namespace), body=body,
                   content_type="application/merge-patch+json")
