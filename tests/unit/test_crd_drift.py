"""The checked-in CRDs and the chart's CRD template must be exactly what the API models generate.

Regenerate both (`make crd` also regenerates docs/reference.md) with:
    modelcache-operator crd -o crds --chart-template charts/modelcache-operator/templates/crds.yaml
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.crd import KINDS, Kind, custom_resource_definition, render_chart_template, render_yaml
from modelcache_operator.api.names import GROUP, VERSION
from modelcache_operator.cli import main

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
CHART_TEMPLATE = REPO / "charts" / "modelcache-operator" / "templates" / "crds.yaml"
REGENERATE = "run `modelcache-operator crd -o crds --chart-template charts/modelcache-operator/templates/crds.yaml`"
IDS = [kind.kind for kind in KINDS]


def test_the_api_has_exactly_these_kinds() -> None:
    assert [(k.kind, k.plural, k.scope, k.short_names) for k in KINDS] == [
        (api.STORE_KIND, api.STORE_PLURAL, "Cluster", ["mst"]),
        (api.KIND, api.PLURAL, "Namespaced", ["mc"]),
        (api.DOWNLOAD_KIND, api.DOWNLOAD_PLURAL, "Namespaced", ["mdl"]),
    ]
    assert [k.filename for k in KINDS] == [
        "modelcache.dev_modelstores.yaml", "modelcache.dev_modelcaches.yaml", "modelcache.dev_modeldownloads.yaml"]


def test_crd_directory_holds_exactly_the_generated_files() -> None:
    assert sorted(p.name for p in CRD_DIR.iterdir()) == sorted(k.filename for k in KINDS), \
        f"{CRD_DIR} has stale or missing files: {REGENERATE}"


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_checked_in_crd_matches_the_models(kind: Kind) -> None:
    path = CRD_DIR / kind.filename
    assert path.read_text() == render_yaml(kind), f"{path} is stale: {REGENERATE}"


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_crd_names_version_and_status(kind: Kind) -> None:
    crd = custom_resource_definition(kind)
    assert crd["metadata"] == {"name": f"{kind.plural}.{GROUP}"}
    spec = crd["spec"]
    assert spec["group"] == GROUP and spec["scope"] == kind.scope
    assert spec["names"] == {"kind": kind.kind, "plural": kind.plural, "singular": kind.singular,
                             "shortNames": kind.short_names, "listKind": f"{kind.kind}List",
                             "categories": ["modelcache"]}
    [version] = spec["versions"]
    assert version["name"] == VERSION and version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["required"] == ["spec"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    for name in kind.object_fields:
        assert schema["properties"]["spec"]["properties"][name]["default"] == {}, name


def test_chart_crd_template_matches_the_models() -> None:
    assert CHART_TEMPLATE.read_text() == render_chart_template(), f"{CHART_TEMPLATE} is stale: {REGENERATE}"


def test_chart_template_is_every_crd_gated_and_kept() -> None:
    lines = render_chart_template().splitlines()
    assert lines[0].startswith("{{- /*") and lines[0].endswith("*/}}")
    assert lines[1] == "{{- if .Values.crds.enabled }}" and lines[-1] == "{{- end }}"
    body = lines[2:-1]
    assert not any(line.startswith("{{") for line in body), "only the gate may be a template action"
    assert sum(line == "---" for line in body) == len(KINDS) - 1
    crds = list(yaml.safe_load_all("\n".join(body)))
    assert len(crds) == len(KINDS)
    for kind, crd in zip(KINDS, crds, strict=True):
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}, kind.kind
        del crd["metadata"]["annotations"]
        assert crd == custom_resource_definition(kind), kind.kind


def test_cli_writes_every_crd_and_the_chart_template(tmp_path: Path) -> None:
    out, chart = tmp_path / "crds", tmp_path / "chart.yaml"
    out.mkdir()
    assert main(["crd", "-o", str(out), "--chart-template", str(chart)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(k.filename for k in KINDS)
    for kind in KINDS:
        assert (out / kind.filename).read_text() == render_yaml(kind)
    assert chart.read_text() == render_chart_template()


def test_cli_prints_every_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    printed = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert printed == [custom_resource_definition(kind) for kind in KINDS]
