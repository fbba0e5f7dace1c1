"""The downloader's time to first request: what its entry point imports before it talks to the hub."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

DEFERRED = ("pydantic", "kubernetes", "modelscope", "modelscope_hub", "modelcache_operator.api.v1alpha2",
            "modelcache_operator.downloader.manifest")


def loaded_by(code: str) -> dict[str, bool]:
    probe = f"import sys, json\n{code}\nprint(json.dumps({{m: m in sys.modules for m in {DEFERRED!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.splitlines()[-1]))


def test_entry_point_defers_models_and_cluster_client() -> None:
    assert loaded_by("import modelcache_operator.downloader.__main__") == dict.fromkeys(DEFERRED, False)


def test_a_folder_with_no_manifest_is_checked_without_the_models() -> None:
    """Between the listing and the first byte the downloader asks whether the revision is published already."""
    loaded = loaded_by("import tempfile\nfrom pathlib import Path\n"
                       "from modelcache_operator.downloader.run import Downloader\n"
                       "assert Downloader._published(None, Path(tempfile.mkdtemp()), None) is None")
    assert loaded == dict.fromkeys(DEFERRED, False)


def test_package_exports_load_on_access() -> None:
    loaded = loaded_by("from modelcache_operator.downloader import ExitCode\n"
                       "from modelcache_operator.downloader import verify_manifest")
    assert loaded["modelcache_operator.downloader.manifest"] and loaded["pydantic"]
    assert not loaded["kubernetes"]


def test_unknown_package_attribute_is_an_attribute_error() -> None:
    from modelcache_operator import downloader

    with pytest.raises(AttributeError, match="no_such_name"):
        downloader.no_such_name  # noqa: B018
