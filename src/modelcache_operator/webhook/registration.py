"""Development only: the webhook process registers its own webhook configurations, pointing at its URL.

Production installs get these from the Helm chart (templates/webhook.yaml); a unit test keeps the two in
step (rules, selectors, failure policy).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kubernetes

from ..api import v1alpha2 as api
from ..api.names import LABEL_INJECT
from ..operator.config import OperatorConfig
from ..operator.kube import Kube

POD_WEBHOOK_NAME = "inject-pods.modelcache.dev"
MODELCACHE_WEBHOOK_NAME = "validate-modelcaches.modelcache.dev"
MODELSTORE_WEBHOOK_NAME = "validate-modelstores.modelcache.dev"
TIMEOUT_SECONDS = 10
# Metadata-only updates (finalizers, annotations such as modelcache.dev/retry) never wait for the webhook:
# nothing it checks lives there, and they keep working while the operator restarts.
SPEC_CHANGES = [{"name": "spec-changes-only",
                 "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec"}]


def webhook_configurations(name: str, base_url: str, ca_bundle: bytes,
                           namespaces: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The MutatingWebhookConfiguration (pods) and ValidatingWebhookConfiguration (ModelCaches, then
    ModelStores), both named `name`. Pure; the chart renders the same webhooks behind a Service."""
    ca = base64.b64encode(ca_bundle).decode()
    selector = ({"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(namespaces)}]}}
        if namespaces else {})

    def hook(webhook_name: str, path: str, rule: dict[str, Any], scope: str = "Namespaced") -> dict[str, Any]:
        # Cluster-scoped objects have no namespace to select on.
        return {"name": webhook_name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "matchPolicy": "Equivalent", "timeoutSeconds": TIMEOUT_SECONDS,
                "clientConfig": {"url": f"{base_url}/{path}", "caBundle": ca},
                "rules": [{**rule, "scope": scope}], **(selector if scope == "Namespaced" else {})}

    pods = hook(POD_WEBHOOK_NAME, "inject-pods",
                {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]})
    pods.update(reinvocationPolicy="Never", objectSelector={"matchLabels": {LABEL_INJECT: "true"}})
    caches = hook(MODELCACHE_WEBHOOK_NAME, "validate-modelcaches",
                  {"apiGroups": [api.GROUP], "apiVersions": [api.VERSION], "resources": [api.PLURAL],
                   "operations": ["CREATE", "UPDATE"]})
    stores = hook(MODELSTORE_WEBHOOK_NAME, "validate-modelstores",
                  {"apiGroups": [api.GROUP], "apiVersions": [api.VERSION], "resources": [api.STORE_PLURAL],
                   "operations": ["CREATE", "UPDATE"]}, scope="Cluster")
    for validating in (caches, stores):
        validating["matchConditions"] = SPEC_CHANGES
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": name}, "webhooks": [pods]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": name}, "webhooks": [caches, stores]},
    ]


def register_webhooks(client: kubernetes.client.ApiClient, name: str, config: OperatorConfig, cert: Path) -> None:
    host = "127.0.0.1" if config.webhook_host in ("0.0.0.0", "") else config.webhook_host  # noqa: S104
    kube = Kube(client)
    for manifest in webhook_configurations(name, f"https://{host}:{config.webhook_port}", cert.read_bytes(),
                                           config.namespaces):
        kube.apply(manifest)
