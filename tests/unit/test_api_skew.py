"""Version skew: objects read back from the apiserver may carry fields of a newer CRD. Reads ignore them;
models our code builds stay strict, and so does the generated schema."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.crd import CACHE, custom_resource_definition

NEWER = {"addedInV1alpha3": {"knob": 1}}


def test_reads_ignore_fields_of_a_newer_crd_at_every_depth() -> None:
    spec = api.ModelCacheSpec.from_api({"source": {"huggingface": {"repo": "Qwen/Qwen3-8B", **NEWER}},
                                        "download": {"maxWorkers": 2, **NEWER}, **NEWER})
    assert (spec.source.huggingface and spec.source.huggingface.repo, spec.download.maxWorkers) == \
        ("Qwen/Qwen3-8B", 2)
    report = api.DownloadReport.from_api({"jobName": "j", "state": "Published", "chunkSize": 8, **NEWER})
    assert report.state == "Published"
    status = api.ModelDownloadStatus.from_api({"phase": "Ready", "download": {"jobName": "j", "state": "Failed",
                                                                             **NEWER}, **NEWER})
    assert status.download is not None and status.download.state == "Failed"


def test_reads_still_refuse_what_the_schema_refuses() -> None:
    with pytest.raises(ValidationError, match="repo"):
        api.ModelCacheSpec.from_api({"source": {"huggingface": {"repo": "not a repo"}}})


def test_what_our_code_builds_stays_strict() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        api.DownloadReport.model_validate({"jobName": "j", "state": "Published", "bytesDnoe": 1})


def test_the_generated_schema_knows_only_the_models_fields() -> None:
    """No x-kubernetes-preserve-unknown-fields on spec or status: the apiserver prunes unknown fields."""
    schema = custom_resource_definition(CACHE)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        assert "x-kubernetes-preserve-unknown-fields" not in schema["properties"][part]
        assert set(schema["properties"][part]["properties"]) == set(
            (api.ModelCacheSpec if part == "spec" else api.ModelCacheStatus).model_fields)
