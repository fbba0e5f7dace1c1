"""Unit tests for webhook/validate.py: which ModelStore a ModelCache may use, and ModelStores that clash."""

from __future__ import annotations

from typing import Any

import pytest

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.webhook.validate import STORAGE_REMOVED, validate_modelcache, validate_modelstore

OSS_URL = "http://oss-cn-hangzhou-internal.aliyuncs.com"
TEAM_LABELS = {"kubernetes.io/metadata.name": "llm", "team": "llm", "tier": "gpu"}


def store_spec(backend: dict[str, Any] | None = None, selector: dict[str, Any] | None = None,
               **fields: Any) -> dict[str, Any]:
    return {**(backend or {"nfs": {"server": "10.0.0.2", "path": "/exports/models"}}),
            "namespaceSelector": {"matchLabels": {"team": "llm"}} if selector is None else selector, **fields}


def store(backend: dict[str, Any] | None = None, selector: dict[str, Any] | None = None,
          **fields: Any) -> api.ModelStoreSpec:
    return api.ModelStoreSpec.model_validate(store_spec(backend, selector, **fields))


def nfs(path: str, server: str = "10.0.0.2") -> dict[str, Any]:
    return {"nfs": {"server": server, "path": path}}


def cache(store_name: str | None = "shared", **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": {"huggingface": {"repo": "Qwen/Qwen3-8B"}}, **fields}
    if store_name:
        spec["store"] = store_name
    return spec


# ----- validate_modelcache -----


def test_a_cache_may_use_a_store_that_selects_its_namespace() -> None:
    stores = {"shared": store(), "other": store(nfs("/other"), {"matchLabels": {"team": "x"}})}
    assert validate_modelcache(cache(), "llm", TEAM_LABELS, stores, False) == ([], [])


def test_a_missing_store_is_refused() -> None:
    errors, warnings = validate_modelcache(cache("fast"), "llm", TEAM_LABELS, {"shared": store()}, False)
    assert errors == ['ModelStore "fast" (spec.store) does not exist']
    assert warnings == []


def test_a_store_whose_spec_does_not_parse_is_refused() -> None:
    errors, _ = validate_modelcache(cache(), "llm", TEAM_LABELS, {"shared": None}, False)
    assert errors == ['ModelStore "shared" (spec.store) has an invalid spec']


@pytest.mark.parametrize("selector", [
    {"matchLabels": {"team": "research"}},
    {"matchLabels": {"team": "llm", "tier": "cpu"}},
    {"matchExpressions": [{"key": "team", "operator": "In", "values": ["research", "infra"]}]},
    {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gpu"]}]},
    {"matchExpressions": [{"key": "sandbox", "operator": "Exists"}]},
    {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]},
    {"matchLabels": {"team": "llm"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["cpu"]}]},
])
def test_a_store_that_does_not_select_the_namespace_is_refused(selector: dict[str, Any]) -> None:
    errors, _ = validate_modelcache(cache(), "llm", TEAM_LABELS, {"shared": store(selector=selector)}, False)
    assert errors == ['ModelStore "shared" (spec.store) does not allow namespace "llm" (its '
                      "spec.namespaceSelector); ask a cluster admin"]


@pytest.mark.parametrize("selector", [
    {},
    {"matchExpressions": [{"key": "team", "operator": "In", "values": ["research", "llm"]}]},
    {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["cpu"]},
                          {"key": "sandbox", "operator": "DoesNotExist"},
                          {"key": "kubernetes.io/metadata.name", "operator": "Exists"}]},
])
def test_match_expressions_that_hold_allow_the_namespace(selector: dict[str, Any]) -> None:
    assert validate_modelcache(cache(), "llm", TEAM_LABELS, {"shared": store(selector=selector)}, False) == ([], [])


def test_an_unknown_namespace_is_not_selected() -> None:
    errors, _ = validate_modelcache(cache(), "llm", None, {"shared": store(selector={})}, False)
    assert errors and 'does not allow namespace "llm"' in errors[0]


def test_a_host_path_store_is_refused_unless_the_chart_allows_it() -> None:
    stores = {"dev": store({"hostPath": {"path": "/var/lib/models"}}, {})}
    errors, _ = validate_modelcache(cache("dev"), "llm", TEAM_LABELS, stores, False)
    assert errors == ['ModelStore "dev" (spec.store) is a hostPath store, and this operator does not allow them '
                      "(chart value stores.allowHostPath)"]
    errors, warnings = validate_modelcache(cache("dev"), "llm", TEAM_LABELS, stores, True)
    assert errors == []
    assert warnings == ['ModelStore "dev" is a hostPath store (a node directory), for single-node development '
                        "clusters only"]


def test_without_spec_store_the_default_store_is_used() -> None:
    stores = {"shared": store(default=True), "other": store(nfs("/other"))}
    assert validate_modelcache(cache(None), "llm", TEAM_LABELS, stores, False) == ([], [])
    stores["shared"] = store(default=True, selector={"matchLabels": {"team": "research"}})
    errors, _ = validate_modelcache(cache(None), "llm", TEAM_LABELS, stores, False)
    assert errors == ['ModelStore "shared" (the default store) does not allow namespace "llm" (its '
                      "spec.namespaceSelector); ask a cluster admin"]


def test_without_spec_store_and_without_a_default_store_the_cache_is_refused() -> None:
    errors, _ = validate_modelcache(cache(None), "llm", TEAM_LABELS, {"shared": store()}, False)
    assert errors == ["spec.store is unset and no ModelStore is marked default; ask a cluster admin for a store "
                      "and name it in spec.store"]


def test_without_spec_store_and_several_default_stores_the_cache_is_refused() -> None:
    stores = {"b": store(default=True), "a": store(nfs("/a"), default=True), "c": None}
    errors, _ = validate_modelcache(cache(None), "llm", TEAM_LABELS, stores, False)
    assert errors == ["spec.store is unset and several ModelStores are marked default (a, b); name one in "
                      "spec.store"]


def test_spec_storage_is_refused_with_the_crd_rules_message() -> None:
    storage = {"nfs": {"server": "10.0.0.2", "path": "/exports/models"}, "capacity": "10Gi"}
    errors, warnings = validate_modelcache(cache(storage=storage), "llm", TEAM_LABELS, {"shared": store()}, False)
    assert errors == [STORAGE_REMOVED] and warnings == []
    assert "spec.storage was removed in v1alpha2" in STORAGE_REMOVED and "spec.store" in STORAGE_REMOVED
    extra = api.ModelCacheSpec.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    rules = extra["x-kubernetes-validations"]
    assert isinstance(rules, list)
    [rule] = [r for r in rules if isinstance(r, dict) and r.get("fieldPath") == ".storage"]
    assert rule["message"] == STORAGE_REMOVED


def test_a_spec_the_model_refuses_names_each_field() -> None:
    spec = cache(source={"huggingface": {"repo": "not a repo", "revision": "-x"}})
    errors, _ = validate_modelcache(spec, "llm", TEAM_LABELS, {"shared": store()}, False)
    assert len(errors) == 2
    assert errors[0].startswith("spec.source.huggingface.repo: String should match pattern")
    assert errors[1].startswith("spec.source.huggingface.revision: String should match pattern")


def test_a_field_only_a_newer_crd_has_is_admitted() -> None:
    """The apiserver validated it against the installed CRD, which may be newer than this webhook."""
    spec = cache(future={"knob": 1})
    spec["source"]["huggingface"]["mirrorPolicy"] = "nearest"
    assert validate_modelcache(spec, "llm", TEAM_LABELS, {"shared": store()}, False) == ([], [])


# ----- validate_modelstore -----


def test_a_plain_store_is_fine() -> None:
    others = {"other": store(nfs("/exports/other")), "broken": None}
    assert validate_modelstore("shared", store_spec(), others, False) == ([], [])


def test_a_host_path_store_is_refused_when_not_allowed() -> None:
    spec = store_spec({"hostPath": {"path": "/var/lib/models"}})
    errors, _ = validate_modelstore("dev", spec, {}, False)
    assert errors == ["spec.hostPath: this operator does not allow hostPath stores (a node directory, for "
                      "single-node development clusters only); set the chart value stores.allowHostPath=true "
                      "to allow them"]
    assert validate_modelstore("dev", spec, {}, True) == (
        [], ["spec.hostPath is a hostPath store (a node directory), for single-node development clusters only"])


@pytest.mark.parametrize(("mine", "theirs", "relation"), [
    ("/exports/models", "/exports/models/", "is the same location as"),
    ("/exports/models/qwen", "/exports/models", "is inside"),
    ("/exports", "/exports/models", "contains"),
    ("/", "/exports/models", "contains"),
])
def test_nfs_stores_on_one_server_must_not_share_or_nest_roots(mine: str, theirs: str, relation: str) -> None:
    errors, _ = validate_modelstore("new", store_spec(nfs(mine)), {"old": store(nfs(theirs))}, False)
    normalised = "/" + mine.strip("/") if mine != "/" else "/"
    assert errors == [f"the nfs root {normalised} {relation} the root /exports/models of ModelStore \"old\"; two "
                      "stores must not share or nest their roots"]


@pytest.mark.parametrize("theirs", [
    nfs("/exports/models", server="10.0.0.3"),
    nfs("/exports/models-2"),
    nfs("/exports/mode"),
    {"efs": {"fileSystemId": "fs-0123456789abcdef0", "path": "/exports/models"}},
    {"storageClass": {"name": "efs-sc"}},
])
def test_other_servers_paths_and_backends_do_not_overlap(theirs: dict[str, Any]) -> None:
    assert validate_modelstore("new", store_spec(nfs("/exports/models")), {"old": store(theirs)}, False) == ([], [])


def test_nfs_server_names_compare_case_insensitively() -> None:
    others = {"old": store(nfs("/exports/models", server="nas.example.com"))}
    errors, _ = validate_modelstore("new", store_spec(nfs("/exports/models", server="NAS.example.com")), others,
                                    False)
    assert len(errors) == 1 and 'ModelStore "old"' in errors[0]


def test_storage_class_stores_never_overlap() -> None:
    sc = {"storageClass": {"name": "efs-sc"}}
    assert validate_modelstore("new", store_spec(sc), {"old": store(sc)}, False) == ([], [])


def test_a_store_never_overlaps_itself_on_update() -> None:
    assert validate_modelstore("shared", store_spec(default=True), {"shared": store(default=True)}, False) == (
        [], [])


def test_a_second_default_store_is_refused_naming_the_existing_one() -> None:
    others = {"shared": store(default=True), "plain": store(nfs("/exports/other"))}
    errors, _ = validate_modelstore("new", store_spec(nfs("/exports/new"), default=True), others, False)
    assert errors == ['spec.default: ModelStore "shared" is already the default store; mark at most one '
                      "ModelStore default (unset spec.default on one of them)"]
    assert validate_modelstore("new", store_spec(nfs("/exports/new")), others, False) == ([], [])


def test_an_empty_namespace_selector_is_warned_about() -> None:
    selectors: list[dict[str, Any]] = [{}, {"matchLabels": {}, "matchExpressions": []}]
    for selector in selectors:
        errors, warnings = validate_modelstore("open", store_spec(selector=selector), {}, False)
        assert errors == []
        assert warnings == ["spec.namespaceSelector is {}, which allows every namespace to use this store"]


def test_a_store_spec_the_model_refuses_names_each_field() -> None:
    spec = store_spec()
    del spec["namespaceSelector"]
    spec["nfs"]["path"] = "relative"
    errors, _ = validate_modelstore("x", spec, {}, False)
    assert sorted(e.split(":")[0] for e in errors) == ["spec.namespaceSelector", "spec.nfs.path"]
    assert "spec.namespaceSelector: Field required" in errors
