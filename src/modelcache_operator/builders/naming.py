"""Deterministic child names and labels. The same cache always maps to the same names, across restarts."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..api import v1alpha1 as api

MANAGED_BY = "modelcache-operator"
FIELD_MANAGER = "modelcache-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_CACHE = "modelcache.dev/cache"
LABEL_CACHE_NAMESPACE = "modelcache.dev/cache-namespace"
LABEL_ROLE = "modelcache.dev/role"
ANNOTATION_RETRY = "modelcache.dev/retry"
FINALIZER = "modelcache.dev/cleanup"

DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253


def short_hash(*parts: Any, length: int = 8) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:length]


def bounded(name: str, limit: int, *identity: Any) -> str:
    """`name` if it fits, else a truncated prefix plus a hash of the full identity, still unique."""
    if len(name) <= limit:
        return name
    suffix = short_hash(name, *identity)
    return f"{name[: limit - len(suffix) - 1].rstrip('-.')}-{suffix}"


def label_value(value: str) -> str:
    return bounded(value, DNS_LABEL_MAX)


def pvc_name(cache: str) -> str:
    return bounded(f"modelcache-{cache}", DNS_SUBDOMAIN_MAX)


def pv_name(namespace: str, cache: str) -> str:
    # PVs are cluster-scoped: the hash of namespace/name keeps same-named caches in two namespaces apart.
    return bounded(f"modelcache-{namespace}-{cache}-{short_hash(namespace, cache)}", DNS_SUBDOMAIN_MAX)


def downloader_identity_name(cache: str) -> str:
    return bounded(f"modelcache-dl-{cache}", DNS_SUBDOMAIN_MAX)


def source_fingerprint(spec: api.ModelCacheSpec, retry_token: str | None) -> str:
    return short_hash(spec.source.model_dump(mode="json", exclude_none=True), retry_token)


def download_job_name(cache: str, fingerprint: str) -> str:
    # Job names become a pod label value, so they must fit in 63 characters.
    return bounded(f"mc-dl-{cache}", DNS_LABEL_MAX - len(fingerprint) - 1, fingerprint) + f"-{fingerprint}"


def cleanup_job_name(cache: str) -> str:
    return bounded(f"mc-rm-{cache}", DNS_LABEL_MAX)


def child_labels(namespace: str, cache: str, role: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_CACHE: label_value(cache),
        LABEL_CACHE_NAMESPACE: label_value(namespace),
        LABEL_ROLE: role,
    }


def owner_reference(cache_body: dict[str, Any]) -> dict[str, Any]:
    meta = cache_body["metadata"]
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
