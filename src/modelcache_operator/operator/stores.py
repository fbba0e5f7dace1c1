"""One idempotent reconcile of a ModelStore: validity, the writable claim shared downloads mount, and a
status with what the store holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..api import v1alpha2 as api
from ..builders import storage, tenancy
from ..builders.quantity import parse_quantity
from ..builders.status import READY, condition, human_bytes
from .converge import Converger, now_rfc3339, object_key, validation_message
from .downloads import DownloadReconciler
from .views import StoreEntry, StoreView


class StoreReconciler(Converger):
    kind = api.STORE_KIND
    remover: DownloadReconciler  # set by the wiring: eviction removes downloads the way their TTL does

    def converge(self, body: dict[str, Any], view: StoreView) -> str:
        meta = body["metadata"]
        generation = meta.get("generation", 1)
        try:
            spec = api.ModelStoreSpec.from_api(body.get("spec") or {})
        except ValidationError as error:
            return self._write(body, generation, None, ("False", "InvalidSpec", validation_message(error)), view)
        backend = storage.backend_name(spec)
        problem = self._problem(meta, spec, view)
        if problem:
            return self._write(body, generation, backend, ("False", *problem), view)
        if spec.storageClass is None:
            for manifest in storage.store_writer_claim(body, spec, self.config.operator_namespace):
                self.apply(object_key(body), manifest)
        self._evict(body, spec, view)
        if spec.storageClass is None and view.writer_claim_phase != "Bound":
            waiting = ("False", "ClaimNotBound", f"the store's writable claim in {self.config.operator_namespace} "
                                                 f"is {view.writer_claim_phase or 'being created'}")
            return self._write(body, generation, backend, waiting, view)
        return self._write(body, generation, backend, ("True", "Ready", f"{backend} store is ready"), view)

    def _evict(self, body: dict[str, Any], spec: api.ModelStoreSpec, view: StoreView) -> None:
        """Over quota, removes unused revision folders, least recently used first; never one that a cache
        wants or a pod uses (those are not in `evictable`). Retain stores never delete."""
        if spec.quota is None or spec.retention.policy != "Delete":
            return
        used = view.published_bytes + view.in_flight_bytes
        quota = parse_quantity(spec.quota) or 0  # the CRD admits only positive quantities
        for victim in view.evictable:
            if used <= quota:
                return
            self.remover.remove({"kind": api.DOWNLOAD_KIND, "metadata": {
                "namespace": victim.namespace, "name": victim.name}}, "quota")
            used -= victim.size
            self.emit(body, "Normal", "Evicting", f"{victim.namespace}/{victim.name} ({human_bytes(victim.size)}, "
                                                  f"unused since {victim.unused_since}): the store is over its "
                                                  f"quota {spec.quota}")

    def _problem(self, meta: dict[str, Any], spec: api.ModelStoreSpec, view: StoreView) -> tuple[str, str] | None:
        return store_problem(meta, spec, view.others, self.config.allow_host_path)

    def _write(self, body: dict[str, Any], generation: int, backend: str | None,
               ready: tuple[str, str, str], view: StoreView) -> str:
        def build(previous: dict[str, Any]) -> dict[str, Any]:
            status: dict[str, Any] = {
                "phase": "Ready" if ready[0] == "True" else "Pending" if ready[1] == "ClaimNotBound" else "Invalid",
                "observedGeneration": generation,
                "conditions": [condition(READY, ready, generation, now_rfc3339(), previous.get("conditions") or [])],
                "usedBytes": view.published_bytes,
                "used": human_bytes(view.published_bytes),
                "revisionCount": view.published_count,
            }
            if backend:
                status["backend"] = backend
            return status
        return self.write_status(body, build)


def store_problem(meta: dict[str, Any], spec: api.ModelStoreSpec, others: Mapping[str, StoreEntry],
                  allow_host_path: bool) -> tuple[str, str] | None:
    """(reason, message) when a store must not be used; the store's status and its caches both go by it."""
    if spec.hostPath is not None and not allow_host_path:
        return "HostPathDisabled", "hostPath stores are disabled (chart value stores.allowHostPath)"
    # Of two overlapping stores the older one keeps working; admission refuses the newer one anyway.
    mine = (str(meta.get("creationTimestamp") or ""), meta["name"])
    older = {name: entry.spec for name, entry in others.items()
             if name != meta["name"] and (str(entry.body["metadata"].get("creationTimestamp") or ""), name) < mine}
    overlaps = tenancy.store_overlaps(meta["name"], spec, older)
    return ("RootOverlap", "; ".join(overlaps)) if overlaps else None
