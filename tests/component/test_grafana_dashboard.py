"""The chart's Grafana dashboard: behind metrics.grafanaDashboard, a ConfigMap labelled for Grafana's dashboard
sidecar, whose panels query only series the operator and the webhook export, and every exported one."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from modelcache_devcluster.binaries import ensure_binaries
from modelcache_operator.operator import leadership, metrics
from modelcache_operator.webhook import server
from tests.component.test_chart import CHART, kinds, one, render, run_helm

DASHBOARD = CHART / "dashboards" / "modelcache-operator.json"
# What PromQL writes besides metric names: functions are followed by "(", aggregations may be followed by a
# grouping clause instead.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
            "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile"}
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series(*registries: CollectorRegistry) -> set[str]:
    """Every series name the registries expose, labelled or not, whether or not a sample exists yet."""
    return {family.name + suffix for registry in registries for family in registry.collect()
            for suffix in SAMPLE_SUFFIXES[family.type]}


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers outside label matchers, ranges, grouping
    clauses and legends that are neither a function call nor a keyword."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", bare)
    names = {m.group(1) for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare)}
    return names - KEYWORDS


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


@pytest.fixture(scope="module")
def helm() -> str:
    return str(ensure_binaries().helm)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_metric_names_are_parsed_from_promql() -> None:
    assert metric_names('sum by (le, result) (rate(a_bucket{result="x"}[5m])) * on (instance) group_left b') \
        == {"a_bucket", "b"}
    assert metric_names("histogram_quantile(0.9, c)") == {"c"}


def test_panels_query_only_and_all_exported_series(dashboard: dict[str, Any]) -> None:
    exported = exported_series(metrics.REGISTRY, server.REGISTRY)
    assert leadership.LEADER._name in exported  # the leader gauge registers on the operator's registry
    used = set().union(*(metric_names(expr) for expr in exprs(dashboard)))
    assert used - exported == set(), "panels query series nobody exports"
    families = {family.name: family.type for registry in (metrics.REGISTRY, server.REGISTRY)
                for family in registry.collect()}
    shown = {name for name, kind in families.items() if any(name + s in used for s in SAMPLE_SUFFIXES[kind])}
    assert shown == set(families), f"exported but on no panel: {sorted(set(families) - shown)}"


def test_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]


def test_off_by_default(helm: str) -> None:
    assert "ConfigMap" not in kinds(render(helm))


def test_enabled_renders_the_dashboard_configmap(helm: str, dashboard: dict[str, Any]) -> None:
    docs = render(helm, "--set", "metrics.grafanaDashboard.enabled=true",
                  "--set", "metrics.grafanaDashboard.annotations.grafana_folder=MLOps",
                  "--set", "metrics.grafanaDashboard.namespace=monitoring")
    configmap = one(docs, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "MLOps"}
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert json.loads(configmap["data"]["modelcache-operator.json"]) == dashboard  # byte for byte, untemplated


def test_schema_refuses_an_unknown_dashboard_value(helm: str) -> None:
    result = run_helm(helm, "template", "mc", str(CHART), "--set", "metrics.grafanaDashboard.enable=true")
    assert result.returncode != 0 and "enable" in result.stderr, result.stderr
