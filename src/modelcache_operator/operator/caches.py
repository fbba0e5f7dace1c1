"""One idempotent reconcile of a ModelCache: its store, its namespace's read-only claim, and the shared (or
namespace-private) ModelDownload that fills the folder it wants."""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ..api import v1alpha2 as api
from ..api.names import ANN_REQUESTED_AT, ANNOTATION_RETRY, FINALIZER
from ..builders import compile_cache, layout, naming, ossfs_options, pod_security, storage, tenancy
from ..builders.cache_status import CacheObservation, cache_status
from . import metrics
from .converge import Converger, ObjectKey, now_rfc3339, object_key, validation_message
from .stores import store_problem
from .views import CacheView, StoreEntry

log = logging.getLogger(__name__)


class CacheReconciler(Converger):
    kind = api.KIND

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phases = metrics.PhaseTracker()

    def forget(self, key: ObjectKey) -> None:
        super().forget(key)
        self.phases.set((str(key[1]), key[2]), None)

    def _write(self, body: dict[str, Any], obs: CacheObservation) -> str:
        phase = self.write_status(body, lambda previous: cache_status(
            CacheObservation(**{**obs.__dict__, "previous": previous}), now_rfc3339()))
        meta = body["metadata"]
        self.phases.set((meta["namespace"], meta["name"]), phase)
        return phase

    def converge(self, body: dict[str, Any], view: CacheView) -> str:
        meta = body["metadata"]
        namespace, generation = meta["namespace"], meta.get("generation", 1)
        try:
            spec = api.ModelCacheSpec.from_api(body.get("spec") or {})
        except ValidationError as error:
            return self._write(body, CacheObservation(generation, invalid_spec=validation_message(error)))
        self.ensure_finalizer(body)
        model = layout.source_key(spec.source).model_label
        choice = tenancy.choose_store(spec, namespace, view.namespace_labels,
                                      {n: e.spec for n, e in view.stores.items()}, self.config.allow_host_path,
                                      remembered=(body.get("status") or {}).get("store"))
        if choice.store is None or choice.name is None:
            # Create nothing: the cache may not touch that storage.
            return self._write(body, CacheObservation(generation, model=model, store=choice.name,
                                                      store_problem=(str(choice.reason), str(choice.message))))
        store_entry = view.stores[choice.name]
        unusable = store_problem(store_entry.body["metadata"], choice.store, view.stores, self.config.allow_host_path)
        if unusable:
            # The store's own status says Invalid for the same reason: create nothing on it either.
            return self._write(body, CacheObservation(generation, model=model, store=choice.name, store_problem=(
                unusable[0], f'ModelStore "{choice.name}" cannot be used: {unusable[1]}')))
        place = layout.placement(spec, choice.store, namespace)
        refusal = pod_security.private_download_refusal(choice.name, choice.store, place.private, namespace,
                                                        view.namespace_labels)
        if refusal and self._download_identity(body, spec, choice.name, place) not in view.downloads:
            # Its Job could never start a pod there: create nothing. A download that exists keeps going.
            return self._write(body, CacheObservation(generation, model=model, store=choice.name,
                                                      store_problem=(pod_security.REASON, refusal)))
        pvc_name, pv_name = self._serving_claim(body, choice.name, store_entry, place,
                                                ossfs_options.served_hints(spec))
        ref = self._download(body, spec, choice.name, place, view)
        compile_claim = self._compile_claim(body, namespace, choice.name, store_entry, place)
        return self._write(body, CacheObservation(
            generation, model=model, store=choice.name, placement=place, pv_name=pv_name, pvc_name=pvc_name,
            pvc_phase=view.pvc_phases.get(pvc_name), download_ref=ref,
            download=view.downloads.get((ref.namespace, ref.name)), compile_cache=compile_claim))

    # ----- children -----

    def _serving_claim(self, body: dict[str, Any], store_name: str, store: StoreEntry,
                       place: layout.Placement, hints: ossfs_options.ServingHints) -> tuple[str, str | None]:
        """(claim, PV) pods mount read-only. A storageClass store's is the namespace's one volume instead."""
        meta = body["metadata"]
        namespace, name, key = meta["namespace"], meta["name"], object_key(body)
        assert store.spec is not None
        if place.dynamic:
            claim = naming.store_claim_name(store_name)
            self.apply(key, storage.persistent_volume_claim(
                claim, namespace, store.spec, read_only=False, volume_name=None,
                labels=naming.child_labels("store", store=store_name),
                owners=[naming.owner_reference(store.body, controller=False)]))
            return claim, None
        labels = naming.child_labels("serving", cache=(namespace, name), store=store_name)
        pv, pvc = naming.pv_name(namespace, name), naming.pvc_name(name)
        self.apply(key, storage.persistent_volume(
            pv, store.spec, place.serving_root, read_only=True, claim=(namespace, pvc), labels=labels,
            operator_namespace=self.config.operator_namespace,
            hints=hints))
        self.apply(key, storage.persistent_volume_claim(
            pvc, namespace, store.spec, read_only=True, volume_name=pv, labels=labels,
            owners=[naming.owner_reference(body)]))
        if place.private:
            self._private_writer_claim(key, namespace, store_name, store, place)
        return pvc, pv

    def _private_writer_claim(self, key: ObjectKey, namespace: str, store_name: str, store: StoreEntry,
                              place: layout.Placement) -> None:
        """The writable claim of a namespace-private download: limited to this namespace's model folder."""
        assert store.spec is not None
        claim, pv = private_writer_names(namespace, store_name, place)
        labels = naming.child_labels("private-writer", store=store_name)
        owners = [naming.owner_reference(store.body, controller=False)]
        self.apply(key, storage.persistent_volume(
            pv, store.spec, place.serving_root, read_only=False, claim=(namespace, claim), labels=labels,
            operator_namespace=self.config.operator_namespace, owners=owners))
        self.apply(key, storage.persistent_volume_claim(
            claim, namespace, store.spec, read_only=False, volume_name=pv, labels=labels, owners=owners))

    def _compile_claim(self, body: dict[str, Any], namespace: str, store_name: str, store: StoreEntry,
                       place: layout.Placement) -> api.CompileCacheStatus | None:
        """The namespace's writable compile-cache claim on compile/<namespace> of a static store that has
        spec.compileCache enabled; owned by the store, shared by the namespace's caches on it. Named in
        status only once that folder exists, so no pod mounts a PV that cannot mount."""
        assert store.spec is not None
        settings = store.spec.compileCache
        if not settings.enabled or place.dynamic:
            return None
        key = object_key(body)
        claim, pv = compile_cache.claim_names(namespace, store_name)
        if not self._compile_folder_exists(body, namespace, store_name, store, claim):
            return None
        labels = naming.child_labels("compile-cache", store=store_name)
        owners = [naming.owner_reference(store.body, controller=False)]
        self.apply(key, storage.persistent_volume(
            pv, store.spec, compile_cache.namespace_root(namespace), read_only=False, claim=(namespace, claim),
            labels=labels, operator_namespace=self.config.operator_namespace, owners=owners))
        self.apply(key, storage.persistent_volume_claim(
            claim, namespace, store.spec, read_only=False, volume_name=pv, labels=labels, owners=owners))
        return api.CompileCacheStatus(pvcName=claim, sizeLimit=settings.sizeLimit,
                                      rootOwned=store.spec.hostPath is not None)

    def _compile_folder_exists(self, body: dict[str, Any], namespace: str, store_name: str, store: StoreEntry,
                               claim: str) -> bool:
        """hostPath PVs create their folder; elsewhere a Job creates it once (see compile_cache.folder_job)."""
        assert store.spec is not None
        previous = ((body.get("status") or {}).get("compileCache") or {}).get("pvcName")
        if store.spec.hostPath is not None or previous == claim:
            return True
        operator_namespace = self.config.operator_namespace
        job = compile_cache.folder_job(store.body, namespace, naming.store_claim_name(store_name), self.config.image,
                                       operator_namespace)
        live = self.kube.get("Job", job["metadata"]["name"], operator_namespace)
        if live is None:
            self.apply(object_key(body), job, present=False)
            return False
        return any(c.get("type") == "Complete" and c.get("status") == "True"
                   for c in (live.get("status") or {}).get("conditions") or [])

    def _download_identity(self, body: dict[str, Any], spec: api.ModelCacheSpec, store_name: str,
                           place: layout.Placement) -> tuple[str, str]:
        """(namespace, name) of the ModelDownload this cache wants."""
        meta = body["metadata"]
        retry = (meta.get("annotations") or {}).get(ANNOTATION_RETRY)
        key = layout.download_key(spec, store_name, meta["namespace"], place.private, retry)
        download_namespace = meta["namespace"] if place.private else self.config.operator_namespace
        return download_namespace, naming.download_name(store_name, layout.source_key(spec.source).repo, key)

    def _download(self, body: dict[str, Any], spec: api.ModelCacheSpec, store_name: str, place: layout.Placement,
                  view: CacheView) -> api.DownloadRef:
        meta = body["metadata"]
        store = view.stores[store_name]
        namespace, name = meta["namespace"], meta["name"]
        download_namespace, download_name = self._download_identity(body, spec, store_name, place)
        if place.dynamic:
            claim = naming.store_claim_name(store_name)
        elif place.private:
            claim = private_writer_names(namespace, store_name, place)[0]
        else:
            claim = naming.store_claim_name(store_name)
        requested_by = f"{namespace}/{name}"
        manifest = {
            "apiVersion": api.API_VERSION, "kind": api.DOWNLOAD_KIND,
            "metadata": {"name": download_name, "namespace": download_namespace,
                         "labels": naming.child_labels("download", store=store_name),
                         "annotations": {ANN_REQUESTED_AT: naming.request_stamp(body)},
                         "ownerReferences": [naming.owner_reference(store.body)]},
            "spec": api.ModelDownloadSpec(
                store=store_name, source=spec.source, folder=place.download_folder, claimName=claim,
                download=spec.download, requestedBy=requested_by).model_dump(mode="json", exclude_none=True),
        }
        if (download_namespace, download_name) not in view.downloads:
            self._create_download(body, manifest)
        # The cache whose request started the download: the one in its spec, once the watch has it.
        current = (body.get("status") or {}).get("downloadRef") or {}
        if current.get("name") == download_name and current.get("namespace") == download_namespace:
            requested_by = current.get("requestedBy", requested_by)
        requested_by = view.download_requesters.get((download_namespace, download_name), requested_by)
        return api.DownloadRef(namespace=download_namespace, name=download_name, shared=not place.private,
                               requestedBy=requested_by)

    def _create_download(self, body: dict[str, Any], manifest: dict[str, Any]) -> None:
        """Created once: its spec is immutable, and the first cache to ask is the one that requested it. A
        second cache racing the watch gets 422 (the immutable spec) and shares the first one's."""
        try:
            self.apply(object_key(body), manifest, present=False)
        except ApiException as error:
            if error.status != 422:
                raise
            log.info("ModelDownload %s/%s already exists; sharing it", manifest["metadata"]["namespace"],
                     manifest["metadata"]["name"])

    # ----- deletion -----

    def finalize(self, body: dict[str, Any], view: CacheView) -> str:
        """Removes this namespace's PV (its claim goes with its owner). Files stay: only the store's
        retention removes them, once no cache wants and no pod uses them."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return "Deleting"
        self.kube.delete("PersistentVolumeClaim", naming.pvc_name(name), namespace)
        self.kube.delete("PersistentVolume", naming.pv_name(namespace, name))
        if self.remove_finalizer(body):
            self.emit(body, "Normal", "Deleted", "this namespace's PersistentVolume and claim were removed; the "
                                                 "files stay for the store's retention policy")
        self.forget(object_key(body))
        return "Deleting"


def private_writer_names(namespace: str, store: str, place: layout.Placement) -> tuple[str, str]:
    """(claim, PV) of the writable claim on one namespace's private model folder of one store."""
    digest = naming.short_hash(namespace, store, place.model_dir)
    claim = naming.bounded(f"modelcache-rw-{store}-{naming.slug(place.model_dir)}-{digest}", naming.DNS_SUBDOMAIN_MAX)
    return claim, naming.bounded(f"modelcache-{namespace}-rw-{digest}", naming.DNS_SUBDOMAIN_MAX)
