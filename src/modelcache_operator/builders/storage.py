"""PV and PVC for each storage backend, as in the ossfs 2.0 guide (seed 001): a static RWX PV pre-bound
to its PVC, or a dynamic RWX PVC from a StorageClass."""

from __future__ import annotations

from typing import Any

from ..api import v1alpha1 as api
from . import naming

OSSFS_DRIVER = "ossplugin.csi.alibabacloud.com"
EFS_DRIVER = "efs.csi.aws.com"


def backend_name(storage: api.Storage) -> str:
    return next(b for b in api.STORAGE_BACKENDS if getattr(storage, b) is not None)


def _persistent_volume_source(storage: api.Storage, pv_name: str, namespace: str) -> dict[str, Any]:
    if storage.ossfs2:
        oss = storage.ossfs2
        attributes = {"fuseType": "ossfs2", "bucket": oss.bucket, "path": oss.path, "url": oss.url}
        if oss.otherOpts:
            attributes["otherOpts"] = oss.otherOpts
        csi: dict[str, Any] = {"driver": OSSFS_DRIVER, "volumeHandle": pv_name, "volumeAttributes": attributes}
        if oss.authType == "rrsa":
            attributes |= {"authType": "rrsa", "roleName": oss.roleName or ""}
        elif oss.secretRef:
            csi["nodePublishSecretRef"] = {"name": oss.secretRef.name, "namespace": namespace}
        return {"csi": csi}
    if storage.nfs:
        return {"nfs": {"server": storage.nfs.server, "path": storage.nfs.path}}
    if storage.efs:
        efs = storage.efs
        # efs.csi.aws.com volumeHandle: <fileSystemId>:<subpath>:<accessPointId>
        handle = efs.fileSystemId
        if efs.path or efs.accessPointId:
            handle += f":{efs.path or ''}"
        if efs.accessPointId:
            handle += f":{efs.accessPointId}"
        return {"csi": {"driver": EFS_DRIVER, "volumeHandle": handle}}
    if storage.hostPath:
        return {"hostPath": {"path": storage.hostPath.path, "type": "DirectoryOrCreate"}}
    raise ValueError(f"backend {backend_name(storage)} has no static PersistentVolume")


def is_static(storage: api.Storage) -> bool:
    return storage.storageClass is None


def persistent_volume(cache_body: dict[str, Any], spec: api.ModelCacheSpec) -> dict[str, Any] | None:
    """The static PV, or None for a StorageClass backend. PVs are cluster-scoped, so no owner reference:
    the operator's finalizer removes them."""
    if not is_static(spec.storage):
        return None
    namespace, cache = cache_body["metadata"]["namespace"], cache_body["metadata"]["name"]
    name = naming.pv_name(namespace, cache)
    pv_spec: dict[str, Any] = {
        "capacity": {"storage": spec.storage.capacity},
        "accessModes": ["ReadWriteMany"],
        "volumeMode": "Filesystem",
        # The operator deletes the files itself (reclaimPolicy Delete runs a cleanup Job); the PV never does.
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace,
                     "name": naming.pvc_name(cache)},
        **_persistent_volume_source(spec.storage, name, namespace),
    }
    if spec.storage.nfs and spec.storage.nfs.mountOptions:
        pv_spec["mountOptions"] = spec.storage.nfs.mountOptions
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": naming.child_labels(namespace, cache, "storage")},
        "spec": pv_spec,
    }


def persistent_volume_claim(cache_body: dict[str, Any], spec: api.ModelCacheSpec) -> dict[str, Any]:
    namespace, cache = cache_body["metadata"]["namespace"], cache_body["metadata"]["name"]
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": spec.storage.capacity}},
    }
    if spec.storage.storageClass:
        claim_spec["storageClassName"] = spec.storage.storageClass.name
    else:
        claim_spec |= {"storageClassName": "", "volumeName": naming.pv_name(namespace, cache)}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": naming.pvc_name(cache),
            "namespace": namespace,
            "labels": naming.child_labels(namespace, cache, "storage"),
            "ownerReferences": [naming.owner_reference(cache_body)],
        },
        "spec": claim_spec,
    }
