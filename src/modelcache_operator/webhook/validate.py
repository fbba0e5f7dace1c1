"""ModelCache and ModelStore admission checks that CEL cannot express, because they need other objects.

Both functions are pure: the handler passes in the webhook's watch-fed views of the ModelStores and the
Namespace labels. Store choice and root overlaps are `builders.tenancy`'s rules, shared with the reconciler,
so admission and reconciliation never disagree.

Decisions:

- **A ModelCache is refused when it may not use its store** (missing, invalid, hostPath while disabled, the
  namespace not selected, no or several default stores): a clear refusal at `kubectl apply` beats a
  condition found later. The reconciler reports the same rule as a condition for caches that got past
  admission or whose store changed later.
- **spec.storage is refused** with the CRD rule's message: CEL refuses it first, this is the second line
  for a CRD installed without the rule.
- **Two ModelStores must not share or nest their roots**: the garbage collection and quota of one would
  count and remove the other's folders. storageClass stores own their volumes and never overlap.
- **At most one default store**; a second one is refused, naming the existing default.
- Warnings: hostPath stores are for single-node development clusters, and an empty namespaceSelector
  allows every namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from ..api import v1alpha2 as api
from ..builders import tenancy

# The message of the ModelCacheSpec CEL rule on spec.storage (a unit test keeps the two equal).
STORAGE_REMOVED = (
    "spec.storage was removed in v1alpha2: storage belongs to a cluster admin's ModelStore; name one in "
    "spec.store, or leave it unset for the default store"
)
HOST_PATH_WARNING = "is a hostPath store (a node directory), for single-node development clusters only"

Result = tuple[list[str], list[str]]  # (errors, warnings)
M = TypeVar("M", bound=api.ApiModel)


def _parse(model: type[M], spec: Mapping[str, Any]) -> M | list[str]:
    """The parsed spec, or one error per problem naming its field as spec.<path>. The apiserver validated
    the object against its CRD before admission: a field only a newer CRD has is not refused here."""
    try:
        return model.from_api(spec)
    except ValidationError as error:
        return [
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else f"spec: {e['msg']}"
            for e in error.errors()
        ]


def validate_modelcache(
    spec: Mapping[str, Any],
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    stores: Mapping[str, api.ModelStoreSpec | None],
    allow_host_path: bool,
) -> Result:
    """(errors, warnings) for a ModelCache CREATE or UPDATE in `namespace` (whose labels are
    `namespace_labels`, None when unknown). `stores` maps every ModelStore's name to its parsed spec (None
    when it does not parse)."""
    if spec.get("storage") is not None:
        return [STORAGE_REMOVED], []
    parsed = _parse(api.ModelCacheSpec, spec)
    if isinstance(parsed, list):
        return parsed, []
    choice = tenancy.choose_store(parsed, namespace, namespace_labels, stores, allow_host_path)
    if choice.message is not None or choice.store is None:
        return [choice.message or f'ModelStore "{choice.name}" cannot be used'], []
    if choice.store.hostPath is not None:
        return [], [f'ModelStore "{choice.name}" {HOST_PATH_WARNING}']
    return [], []


def validate_modelstore(
    name: str, spec: Mapping[str, Any], others: Mapping[str, api.ModelStoreSpec | None], allow_host_path: bool
) -> Result:
    """(errors, warnings) for a ModelStore CREATE or UPDATE. `others` maps ModelStore names to parsed specs
    (None when one does not parse); an entry for `name` itself is skipped."""
    parsed = _parse(api.ModelStoreSpec, spec)
    if isinstance(parsed, list):
        return parsed, []
    errors: list[str] = []
    warnings: list[str] = []
    if parsed.hostPath is not None:
        if allow_host_path:
            warnings.append(f"spec.hostPath {HOST_PATH_WARNING}")
        else:
            errors.append(
                "spec.hostPath: this operator does not allow hostPath stores (a node directory, for "
                "single-node development clusters only); set the chart value stores.allowHostPath=true to "
                "allow them"
            )
    errors.extend(tenancy.store_overlaps(name, parsed, others))
    if parsed.default:
        defaults = sorted(n for n, s in others.items() if n != name and s is not None and s.default)
        if defaults:
            named = ", ".join(f'"{d}"' for d in defaults)
            errors.append(
                f"spec.default: ModelStore {named} is already the default store; "
                "mark at most one ModelStore default (unset spec.default on one of them)"
            )
    selector = parsed.namespaceSelector
    if not selector.matchLabels and not selector.matchExpressions:
        warnings.append("spec.namespaceSelector is {}, which allows every namespace to use this store")
    return errors, warnings
