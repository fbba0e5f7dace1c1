"""Deterministic child names and labels. The same object always maps to the same names, across restarts."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ..api.names import (
    ANNOTATION_RETRY,
    API_VERSION,
    LABEL_CACHE,
    LABEL_CACHE_NAMESPACE,
    LABEL_DOWNLOAD,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_STORE,
    MANAGED_BY,
)

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


def slug(text: str) -> str:
    """A DNS-label-safe rendering of a repo id such as Qwen/Qwen3-0.6B."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


# ----- per cache, in its namespace: the read-only claim pods mount -----

def pvc_name(cache: str) -> str:
    return bounded(f"modelcache-{cache}", DNS_SUBDOMAIN_MAX)


def pv_name(namespace: str, cache: str) -> str:
    # PVs are cluster-scoped: the hash of namespace/name keeps same-named caches in two namespaces apart.
    return bounded(f"modelcache-{namespace}-{cache}-{short_hash(namespace, cache)}", DNS_SUBDOMAIN_MAX)


def private_pvc_name(cache: str) -> str:
    """The writable claim of a namespace-private download (a cache with its own token)."""
    return bounded(f"modelcache-{cache}-rw", DNS_SUBDOMAIN_MAX)


def private_pv_name(namespace: str, cache: str) -> str:
    return bounded(f"modelcache-{namespace}-{cache}-{short_hash(namespace, cache)}-rw", DNS_SUBDOMAIN_MAX)


# ----- per store: the writable claim shared downloads mount (in the operator's namespace), or, for a
# storageClass store, the one claim of each namespace -----

def store_claim_name(store: str) -> str:
    return bounded(f"modelcache-store-{store}", DNS_SUBDOMAIN_MAX)


def store_pv_name(store: str) -> str:
    return bounded(f"modelcache-store-{store}", DNS_SUBDOMAIN_MAX)


# ----- per download -----

def download_name(store: str, repo: str, key: Any) -> str:
    """Readable (store and repo) and unique (a hash of everything that makes the download)."""
    digest = short_hash(key)
    return bounded(f"{store}-{slug(repo)}", DNS_LABEL_MAX - len(digest) - 1, key) + f"-{digest}"


def download_job_name(download: str) -> str:
    # Job names become a pod label value, so they must fit in 63 characters.
    return bounded(f"mc-dl-{download}", DNS_LABEL_MAX)


def cleanup_job_name(download: str) -> str:
    return bounded(f"mc-rm-{download}", DNS_LABEL_MAX)


def downloader_identity_name(download: str) -> str:
    return bounded(f"modelcache-dl-{download}", DNS_SUBDOMAIN_MAX)


def child_labels(role: str, *, cache: tuple[str, str] | None = None, download: str | None = None,
                 store: str | None = None) -> dict[str, str]:
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ROLE: role}
    if cache:
        labels |= {LABEL_CACHE_NAMESPACE: label_value(cache[0]), LABEL_CACHE: label_value(cache[1])}
    if download:
        labels[LABEL_DOWNLOAD] = label_value(download)
    if store:
        labels[LABEL_STORE] = label_value(store)
    return labels


def owner_reference(body: dict[str, Any], controller: bool = True) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": body["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def request_stamp(cache: dict[str, Any]) -> str:
    """What a cache's request for a download depends on besides its status: its generation and retry value."""
    meta = cache["metadata"]
    return f"{meta.get('generation', 1)}:{(meta.get('annotations') or {}).get(ANNOTATION_RETRY, '')}"
