"""Who may use which store: namespace selectors, the default store, hostPath gating, overlapping roots."""

from __future__ import annotations

from typing import Any

import pytest

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.builders import tenancy

CACHE = api.ModelCacheSpec.model_validate({"source": {"huggingface": {"repo": "Qwen/Qwen3-8B"}}, "store": "nfs"})
DEFAULT_CACHE = api.ModelCacheSpec.model_validate({"source": {"huggingface": {"repo": "Qwen/Qwen3-8B"}}})


def store(selector: dict[str, Any] | None = None, **fields: Any) -> api.ModelStoreSpec:
    backend = {k: v for k, v in fields.items() if k in api.STORAGE_BACKENDS} or {
        "nfs": {"server": "10.0.0.2", "path": "/exports"}}
    rest = {k: v for k, v in fields.items() if k not in api.STORAGE_BACKENDS}
    return api.ModelStoreSpec.model_validate({**backend, "namespaceSelector": selector or {}, **rest})


@pytest.mark.parametrize(("selector", "labels", "allowed"), [
    ({}, {}, True),
    ({"matchLabels": {"team": "a"}}, {"team": "a", "x": "y"}, True),
    ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, {"team": "b"}, True),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, {}, False),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {"team": "a"}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": ""}, False),
])
def test_selector_semantics(selector: dict[str, Any], labels: dict[str, str], allowed: bool) -> None:
    assert tenancy.selector_matches(api.LabelSelector.model_validate(selector), labels) is allowed


def test_named_store_allowed_for_the_namespace() -> None:
    choice = tenancy.choose_store(CACHE, "team-a", {"team": "a"}, {"nfs": store({"matchLabels": {"team": "a"}})},
                                  allow_host_path=False)
    assert choice.name == "nfs" and choice.store is not None and choice.reason is None


@pytest.mark.parametrize(("cache", "labels", "stores", "host", "reason", "says"), [
    (CACHE, {"team": "b"}, {"nfs": store({"matchLabels": {"team": "a"}})}, False, "StoreNotAllowed",
     'does not allow namespace "team-a"'),
    (CACHE, None, {"nfs": store()}, False, "StoreNotAllowed", "namespaceSelector"),
    (CACHE, {}, {}, False, "StoreNotFound", 'ModelStore "nfs" (spec.store) does not exist'),
    (CACHE, {}, {"nfs": None}, False, "StoreInvalid", "invalid spec"),
    (CACHE, {}, {"nfs": store(hostPath={"path": "/var/lib/models"})}, False, "HostPathDisabled",
     "stores.allowHostPath"),
    (DEFAULT_CACHE, {}, {"nfs": store()}, False, "NoDefaultStore", "no ModelStore is marked default"),
    (DEFAULT_CACHE, {}, {"a": store(default=True), "b": store(default=True)}, False, "MultipleDefaultStores",
     "a, b"),
])
def test_refusals_name_the_reason(cache: api.ModelCacheSpec, labels: dict[str, str] | None,
                                  stores: dict[str, api.ModelStoreSpec | None], host: bool, reason: str,
                                  says: str) -> None:
    choice = tenancy.choose_store(cache, "team-a", labels, stores, allow_host_path=host)
    assert choice.store is None and choice.reason == reason
    assert says in str(choice.message)


def test_default_store_and_allowed_host_path() -> None:
    stores = {"dev": store(hostPath={"path": "/var/lib/models"}, default=True), "nfs": store()}
    choice = tenancy.choose_store(DEFAULT_CACHE, "team-a", {}, stores, allow_host_path=True)
    assert choice.name == "dev" and choice.store is not None


@pytest.mark.parametrize(("mine", "theirs", "overlap"), [
    ({"nfs": {"server": "nas", "path": "/exports/models"}}, {"nfs": {"server": "NAS", "path": "/exports"}}, True),
    ({"nfs": {"server": "nas", "path": "/exports/models"}}, {"nfs": {"server": "nas", "path": "/exports/m"}}, False),
    ({"nfs": {"server": "nas", "path": "/a"}}, {"nfs": {"server": "other", "path": "/a"}}, False),
    ({"hostPath": {"path": "/var/lib"}}, {"hostPath": {"path": "/var/lib/models"}}, True),
    ({"ossfs2": {"bucket": "models", "url": "http://oss", "roleName": "r"}},
     {"ossfs2": {"bucket": "models", "path": "/x", "url": "http://oss-2", "roleName": "r"}}, True),
    ({"storageClass": {"name": "rwx"}}, {"storageClass": {"name": "rwx"}}, False),
])
def test_overlapping_roots(mine: dict[str, Any], theirs: dict[str, Any], overlap: bool) -> None:
    problems = tenancy.store_overlaps("mine", store(**mine), {"theirs": store(**theirs), "mine": store(**mine)})
    assert bool(problems) is overlap
    if overlap:
        assert 'ModelStore "theirs"' in problems[0]


def test_a_cache_keeps_the_default_store_it_got_first() -> None:
    stores = {"old": store(), "new": store(default=True)}
    choice = tenancy.choose_store(DEFAULT_CACHE, "team-a", {}, stores, allow_host_path=False, remembered="old")
    assert choice.name == "old" and choice.store is not None
    gone = tenancy.choose_store(DEFAULT_CACHE, "team-a", {}, {"new": store(default=True)}, allow_host_path=False,
                                remembered="old")
    assert gone.reason == "StoreNotFound" and 'ModelStore "old" (the default store it got)' in str(gone.message)
