"""The holder of a coordination.k8s.io Lease, read straight from the API (cheap enough to poll every 0.1 s)."""

from __future__ import annotations

import kubernetes

from tests.support.kube import OPERATOR_NAMESPACE


def lease_holder(client: kubernetes.client.ApiClient, name: str, namespace: str = OPERATOR_NAMESPACE) -> str:
    """spec.holderIdentity, "" when nobody holds the Lease."""
    lease = kubernetes.client.CoordinationV1Api(client).read_namespaced_lease(name, namespace)
    return str(lease.spec.holder_identity or "")
