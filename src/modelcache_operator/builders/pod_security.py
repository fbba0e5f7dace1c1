"""Which downloads a namespace's Pod Security level lets run: a pure check the cache reconciler makes before
it creates a download whose Jobs would run in the cache's own namespace."""

from __future__ import annotations

from collections.abc import Mapping

from ..api import v1alpha2 as api

# The Pod Security admission's label (Kubernetes', not ours): the level the namespace enforces on pods.
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
REASON = "PodSecurityRestricted"


def private_download_refusal(store_name: str, store: api.ModelStoreSpec, private: bool, namespace: str,
                             namespace_labels: Mapping[str, str] | None) -> str | None:
    """Why a private download (Jobs in `namespace`) on this store could never start, or None. A hostPath
    volume gets no fsGroup, so its download Job hands the folder to the downloader with a root init container
    holding CAP_CHOWN (builders/jobs.volume_permissions), which the `restricted` level refuses: the Job would
    stay without a pod. Every other backend's Jobs are restricted-clean."""
    if store.hostPath is None or not private or (namespace_labels or {}).get(ENFORCE_LABEL) != "restricted":
        return None
    return (f'ModelStore "{store_name}" is a hostPath store, whose download Job needs a root init container '
            f'(CAP_CHOWN) to hand the folder to the downloader; namespace "{namespace}" enforces the restricted '
            f"Pod Security Standard ({ENFORCE_LABEL}: restricted), so this cache's private download (its own "
            "tokenSecretRef) could never start. Drop the tokenSecretRef (a shared download runs in the "
            "operator's namespace), or use a store on nfs, efs, ossfs2 or a storageClass")
