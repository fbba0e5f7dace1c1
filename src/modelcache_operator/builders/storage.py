"""PersistentVolumes and claims over a store, as in the ossfs 2.0 guide (seed 001): static PVs pre-bound to
their claims, each pointing at one directory of the store, or a namespace's claim from a StorageClass.

Only an admin's ModelStore decides where a PV points; a cache only picks the (hub, repo) folder below it.
Serving claims are read-only at the volume level wherever the backend has the switch (csi.readOnly,
nfs.readOnly), not only through the pods' mount flag.
"""

from __future__ import annotations

import posixpath
from typing import Any

from ..api import v1alpha2 as api
from . import naming
from .ossfs_options import ServingHints, ossfs_options

OSSFS_DRIVER = "ossplugin.csi.alibabacloud.com"
EFS_DRIVER = "efs.csi.aws.com"


def backend_name(store: api.ModelStoreSpec) -> str:
    return next(b for b in api.STORAGE_BACKENDS if getattr(store, b) is not None)


def _join(root: str, relative: str) -> str:
    return posixpath.normpath(posixpath.join(root, relative)) if relative else root


def _volume_source(store: api.ModelStoreSpec, relative: str, pv_name: str, read_only: bool,
                   operator_namespace: str, *, hints: ServingHints | None) -> dict[str, Any]:
    if store.ossfs2:
        oss = store.ossfs2
        attributes = {"fuseType": "ossfs2", "bucket": oss.bucket, "path": _join(oss.path, relative), "url": oss.url}
        opts = oss.otherOpts if hints is None else ossfs_options(oss.otherOpts, hints, oss.memoryDataCacheSize).text
        if opts:
            attributes["otherOpts"] = opts
        csi: dict[str, Any] = {"driver": OSSFS_DRIVER, "volumeHandle": pv_name, "volumeAttributes": attributes,
                               "readOnly": read_only}
        if oss.authType == "rrsa":
            attributes |= {"authType": "rrsa", "roleName": oss.roleName or ""}
        elif oss.secretRef:
            csi["nodePublishSecretRef"] = {"name": oss.secretRef.name, "namespace": operator_namespace}
        return {"csi": csi}
    if store.nfs:
        return {"nfs": {"server": store.nfs.server, "path": _join(store.nfs.path, relative), "readOnly": read_only}}
    if store.efs:
        efs = store.efs
        # efs.csi.aws.com volumeHandle: <fileSystemId>:<subpath>[:<accessPointId>]
        handle = f"{efs.fileSystemId}:{_join(efs.path, relative)}"
        if efs.accessPointId:
            handle += f":{efs.accessPointId}"
        return {"csi": {"driver": EFS_DRIVER, "volumeHandle": handle, "readOnly": read_only}}
    if store.hostPath:
        # hostPath has no volume-level read-only switch; pods get readOnly mounts (development only).
        return {"hostPath": {"path": _join(store.hostPath.path, relative), "type": "DirectoryOrCreate"}}
    raise ValueError(f"backend {backend_name(store)} has no static PersistentVolume")


def access_mode(read_only: bool) -> str:
    return "ReadOnlyMany" if read_only else "ReadWriteMany"


def persistent_volume(name: str, store: api.ModelStoreSpec, relative: str, *, read_only: bool,
                      claim: tuple[str, str], labels: dict[str, str], operator_namespace: str,
                      owners: list[dict[str, Any]] | None = None, hints: ServingHints | None = None) -> dict[str, Any]:
    """A static PV on `relative` below the store root, pre-bound to `claim` (namespace, name). A served
    volume passes its hints: on ossfs2 they add format- and TP-aware options (builders/ossfs_options.py)."""
    pv_spec: dict[str, Any] = {
        "capacity": {"storage": store.capacity},
        "accessModes": [access_mode(read_only)],
        "volumeMode": "Filesystem",
        # Files go only by the store's retention, never with a PV.
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": claim[0],
                     "name": claim[1]},
        **_volume_source(store, relative, name, read_only, operator_namespace, hints=hints),
    }
    if store.nfs and store.nfs.mountOptions:
        pv_spec["mountOptions"] = list(store.nfs.mountOptions)
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if owners:
        metadata["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": metadata, "spec": pv_spec}


def persistent_volume_claim(name: str, namespace: str, store: api.ModelStoreSpec, *, read_only: bool,
                            volume_name: str | None, labels: dict[str, str],
                            owners: list[dict[str, Any]]) -> dict[str, Any]:
    """Bound to `volume_name` (a static PV), or provisioned by the store's StorageClass when None."""
    claim_spec: dict[str, Any] = {
        "accessModes": [access_mode(read_only)],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": store.capacity}},
    }
    if volume_name is None:
        assert store.storageClass is not None
        claim_spec["storageClassName"] = store.storageClass.name
    else:
        claim_spec |= {"storageClassName": "", "volumeName": volume_name}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": owners},
        "spec": claim_spec,
    }


def store_writer_claim(store_body: dict[str, Any], store: api.ModelStoreSpec,
                       operator_namespace: str) -> list[dict[str, Any]]:
    """The writable PV/PVC on a static store's root that shared download Jobs mount (each with the subPath
    of its own folder), in the operator's namespace."""
    name = store_body["metadata"]["name"]
    labels = naming.child_labels("store", store=name)
    owners = [naming.owner_reference(store_body)]
    pv = naming.store_pv_name(name)
    claim = naming.store_claim_name(name)
    return [
        persistent_volume(pv, store, "", read_only=False, claim=(operator_namespace, claim), labels=labels,
                          operator_namespace=operator_namespace, owners=owners),
        persistent_volume_claim(claim, operator_namespace, store, read_only=False, volume_name=pv, labels=labels,
                                owners=owners),
    ]
