"""The checked-in CRD and the chart's CRD template must be exactly what the API models generate.

Regenerate both with:
    modelcache-operator crd -o crds/modelcache.dev_modelcaches.yaml \
        --chart-template charts/modelcache-operator/templates/crd-modelcaches.yaml
"""

from __future__ import annotations

from pathlib import Path

import yaml

from modelcache_operator.api.crd import custom_resource_definition, render_chart_template, render_yaml
from modelcache_operator.cli import main

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modelcache.dev_modelcaches.yaml"
CHART_TEMPLATE = REPO / "charts" / "modelcache-operator" / "templates" / "crd-modelcaches.yaml"
REGENERATE = ("run `modelcache-operator crd -o crds/modelcache.dev_modelcaches.yaml "
              "--chart-template charts/modelcache-operator/templates/crd-modelcaches.yaml`")


def test_checked_in_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == render_yaml(), f"{CRD_FILE} is stale: {REGENERATE}"


def test_chart_crd_template_matches_the_models() -> None:
    assert CHART_TEMPLATE.read_text() == render_chart_template(), f"{CHART_TEMPLATE} is stale: {REGENERATE}"


def test_chart_template_is_the_crd_gated_and_kept() -> None:
    lines = render_chart_template().splitlines()
    assert lines[1] == "{{- if .Values.crds.enabled }}" and lines[-1] == "{{- end }}"
    crd = yaml.safe_load("\n".join(lines[2:-1]))
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    del crd["metadata"]["annotations"]
    assert crd == custom_resource_definition()


def test_cli_writes_both_files(tmp_path: Path) -> None:
    crd, chart = tmp_path / "crd.yaml", tmp_path / "chart.yaml"
    assert main(["crd", "-o", str(crd), "--chart-template", str(chart)]) == 0
    assert crd.read_text() == render_yaml()
    assert chart.read_text() == render_chart_template()
