"""Who may use which ModelStore: pure functions shared by the reconciler and the admission webhook.

A namespace user names a store; only an admin's ModelStore says which namespaces may use it. The same rules
run at admission (a clear refusal) and in the reconciler (a condition, for caches that got past admission
or whose store changed later), so the two never disagree.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from ..api import v1alpha2 as api


def selector_matches(selector: api.LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: every matchLabels pair and every expression must hold."""
    if any(labels.get(key) != value for key, value in (selector.matchLabels or {}).items()):
        return False
    for expression in selector.matchExpressions or []:
        present, values = expression.key in labels, expression.values or []
        holds = {
            "In": present and labels.get(expression.key) in values,
            "NotIn": not present or labels.get(expression.key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[expression.operator]
        if not holds:
            return False
    return True


@dataclass(frozen=True)
class StoreChoice:
    name: str | None
    store: api.ModelStoreSpec | None
    reason: str | None = None  # set, with message, when the cache may not use a store
    message: str | None = None


def _refuse(reason: str, message: str, name: str | None = None) -> StoreChoice:
    return StoreChoice(name, None, reason, message)


def choose_store(cache: api.ModelCacheSpec, namespace: str, namespace_labels: Mapping[str, str] | None,
                 stores: Mapping[str, api.ModelStoreSpec | None], allow_host_path: bool, *,
                 remembered: str | None = None) -> StoreChoice:
    """The store a cache in `namespace` uses, or why it may not. `stores` maps every ModelStore's name to its
    parsed spec (None when it does not parse). `remembered` is the default store a cache without spec.store
    got first: it keeps that one even if the default moves."""
    name = cache.store or remembered
    if name is None:
        defaults = sorted(n for n, s in stores.items() if s is not None and s.default)
        if not defaults:
            return _refuse("NoDefaultStore", "spec.store is unset and no ModelStore is marked default; "
                                             "ask a cluster admin for a store and name it in spec.store")
        if len(defaults) > 1:
            return _refuse("MultipleDefaultStores", f"spec.store is unset and several ModelStores are marked "
                                                    f"default ({', '.join(defaults)}); name one in spec.store")
        name = defaults[0]
    where = "spec.store" if cache.store else "the default store it got" if remembered else "the default store"
    if name not in stores:
        return _refuse("StoreNotFound", f'ModelStore "{name}" ({where}) does not exist', name)
    store = stores[name]
    if store is None:
        return _refuse("StoreInvalid", f'ModelStore "{name}" ({where}) has an invalid spec', name)
    if store.hostPath is not None and not allow_host_path:
        return _refuse("HostPathDisabled", f'ModelStore "{name}" ({where}) is a hostPath store, and this '
                                           "operator does not allow them (chart value stores.allowHostPath)", name)
    if namespace_labels is None or not selector_matches(store.namespaceSelector, namespace_labels):
        return _refuse("StoreNotAllowed", f'ModelStore "{name}" ({where}) does not allow namespace "{namespace}" '
                                          "(its spec.namespaceSelector); ask a cluster admin", name)
    return StoreChoice(name, store)


# ----- stores whose roots overlap -----

Location = tuple[str, tuple[str, ...], str]


def _norm_path(path: object) -> str:
    return posixpath.normpath("/" + str(path or "/").strip("/"))


def store_location(store: api.ModelStoreSpec) -> Location | None:
    """(backend, volume key, normalised root) of a store, or None for storageClass stores (own volumes)."""
    if store.ossfs2:
        return "ossfs2", (store.ossfs2.bucket,), _norm_path(store.ossfs2.path)
    if store.nfs:
        return "nfs", (store.nfs.server.lower(),), _norm_path(store.nfs.path)
    if store.efs:
        return "efs", (store.efs.fileSystemId, store.efs.accessPointId or ""), _norm_path(store.efs.path)
    if store.hostPath:
        return "hostPath", (), _norm_path(store.hostPath.path)
    return None


def _relation(a: str, b: str) -> str | None:
    if a == b:
        return "is the same location as"
    if b == "/" or a.startswith(b + "/"):
        return "is inside"
    if a == "/" or b.startswith(a + "/"):
        return "contains"
    return None


def store_overlaps(name: str, store: api.ModelStoreSpec,
                   others: Mapping[str, api.ModelStoreSpec | None]) -> list[str]:
    """One message per other store whose root equals or nests with this one's: the garbage collection and
    quota of one would count and remove the other's folders."""
    mine = store_location(store)
    if mine is None:
        return []
    problems = []
    for other_name, other in sorted(others.items()):
        theirs = store_location(other) if other is not None and other_name != name else None
        if theirs is None or theirs[:2] != mine[:2]:
            continue
        relation = _relation(mine[2], theirs[2])
        if relation:
            problems.append(f"the {mine[0]} root {mine[2]} {relation} the root {theirs[2]} of ModelStore "
                            f'"{other_name}"; two stores must not share or nest their roots')
    return problems
