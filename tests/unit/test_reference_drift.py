"""docs/reference.md is generated from the API models; this fails when someone forgets to regenerate it."""

from __future__ import annotations

from pathlib import Path

from modelcache_operator.api.reference import render_markdown

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_reference_matches_the_models() -> None:
    assert REFERENCE.read_text() == render_markdown(), "run `modelcache-operator docs` to regenerate"
