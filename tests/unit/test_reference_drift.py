"""docs/reference.md is generated from the API models; this fails when someone forgets to regenerate it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from modelcache_operator.api.crd import KINDS, custom_resource_definition
from modelcache_operator.api.reference import render_markdown
from modelcache_operator.cli import main

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
REGENERATE = "run `modelcache-operator docs -o docs/reference.md` (or `make crd`) to regenerate"


def test_reference_matches_the_models() -> None:
    assert REFERENCE.read_text() == render_markdown(), REGENERATE


def test_one_section_per_kind_in_crd_order() -> None:
    headings = re.findall(r"^(#{1,3}) (.+)$", render_markdown(), flags=re.MULTILINE)
    assert headings == [("#", "API reference (modelcache.dev/v1alpha2)"),
                        *[h for kind in KINDS for h in (("##", kind.kind), ("###", f"{kind.kind} status"))]]


def test_every_schema_field_has_a_row() -> None:
    """Walks each CRD's own schema: a field the reference misses (or invents) fails here."""
    def paths(node: dict[str, Any], path: str) -> list[str]:
        found = [path]
        for name, child in node.get("properties", {}).items():
            found += paths(child, f"{path}.{name}")
        for name, child in node.get("items", {}).get("properties", {}).items():
            found += paths(child, f"{path}[].{name}")
        return found

    sections = re.split(r"^## ", render_markdown(), flags=re.MULTILINE)[1:]
    assert len(sections) == len(KINDS)
    for kind, section in zip(KINDS, sections, strict=True):
        assert section.startswith(f"{kind.kind}\n")
        schema = custom_resource_definition(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        expected = paths(schema["properties"]["spec"], "spec") + paths(schema["properties"]["status"], "status")
        rows = re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)
        assert rows == expected, kind.kind


def test_table_rows_are_well_formed() -> None:
    for line in render_markdown().splitlines():
        if line.startswith("|"):
            assert len(re.split(r"(?<!\\)\|", line)) == 8, line


def test_storage_class_stores_are_explained_as_per_namespace() -> None:
    text = render_markdown()
    assert "a dynamically provisioned volume cannot be shared across namespaces safely" in text
    assert "each namespace gets its own claim from the class and downloads its own copy" in text


def test_cli_writes_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "reference.md"
    assert main(["docs", "-o", str(out)]) == 0
    assert out.read_text() == render_markdown()
