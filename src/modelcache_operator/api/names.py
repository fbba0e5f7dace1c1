"""Names shared by the operator, the webhook, the downloader and the pods they touch: the API's vocabulary.

Labels, annotations and the finalizer are part of the contract with users and with running pods, so they
live here, not in the component that happens to write them first.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "modelcache.dev"
VERSION: Final = "v1alpha2"
DOWNLOAD_PLURAL: Final = "modeldownloads"  # here, not in v1alpha2: the downloader reports without pydantic
API_VERSION: Final = f"{GROUP}/{VERSION}"

MANAGED_BY: Final = "modelcache-operator"
FIELD_MANAGER: Final = "modelcache-operator"
FINALIZER: Final = f"{GROUP}/cleanup"

# On every child the operator creates.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_CACHE: Final = f"{GROUP}/cache"
LABEL_CACHE_NAMESPACE: Final = f"{GROUP}/cache-namespace"
LABEL_DOWNLOAD: Final = f"{GROUP}/download"
LABEL_STORE: Final = f"{GROUP}/store"
LABEL_ROLE: Final = f"{GROUP}/role"

# Set by users on ModelCaches.
ANNOTATION_RETRY: Final = f"{GROUP}/retry"

# Set by users on serving pods (the opt-in) ...
LABEL_INJECT: Final = f"{GROUP}/inject"
ANN_CACHES: Final = f"{GROUP}/caches"
ANN_CONTAINERS: Final = f"{GROUP}/containers"
ANN_NOT_READY_POLICY: Final = f"{GROUP}/not-ready-policy"
ANN_PREWARM: Final = f"{GROUP}/prewarm"
ANN_COMPILE_CACHE: Final = f"{GROUP}/compile-cache"  # "off" opts a pod out of its store's compile cache
ANN_ENGINE: Final = f"{GROUP}/engine"  # "<vllm|sglang>:<version>" for an image whose name does not say
# ... and by the webhook on them: the revision, its folder inside the claim, and the ModelDownload
# ("<namespace>/<name>") each cache was pinned to. Garbage collection keys on the downloads.
ANN_PINNED: Final = f"{GROUP}/pinned-revisions"
ANN_FOLDERS: Final = f"{GROUP}/folders"
ANN_DOWNLOADS: Final = f"{GROUP}/downloads"
ANN_INJECTED: Final = f"{GROUP}/injected"
# Containers that get no prewarm hook because their engine reads the cache itself: {"container": "reason"}.
ANN_PREWARM_SKIPPED: Final = f"{GROUP}/prewarm-skipped"
# The webhook gates a pod per not-Ready cache with a scheduling gate named GATE_PREFIX + <cache> (hashed when
# long); the operator removes those, and only those, and writes why a gate stays to ANN_GATE_STATUS
# ({cache: "<Reason>: <message>"}).
GATE_PREFIX: Final = f"{GROUP}/cache-"
ANN_GATE_STATUS: Final = f"{GROUP}/gate-status"

# Set by the operator on a ModelDownload it removes, with its folder: ttl or quota.
ANN_REMOVAL: Final = f"{GROUP}/removal"
# Set by the operator on a ModelDownload at its creation: "<generation>:<retry annotation>" of the requesting
# cache. While that cache is unchanged it wants the download, even before its status says so.
ANN_REQUESTED_AT: Final = f"{GROUP}/requested-at"
