"""Unit tests for `validate_modelcache`: storage clashes between ModelCaches, which CEL cannot see."""

from __future__ import annotations

from typing import Any

import pytest

from modelcache_operator.webhook.validate import storage_location, validate_modelcache

OSS_URL = "http://oss-cn-hangzhou-internal.aliyuncs.com"


def cache(storage: dict[str, Any]) -> dict[str, Any]:
    return {"source": {"huggingface": {"repo": "Qwen/Qwen3-8B"}}, "storage": {**storage, "capacity": "80Gi"}}


def oss(path: str, bucket: str = "oss-models") -> dict[str, Any]:
    return cache({"ossfs2": {"bucket": bucket, "path": path, "url": OSS_URL, "roleName": "r"}})


def test_same_ossfs2_bucket_and_path_in_another_namespace_is_an_error() -> None:
    errors, warnings = validate_modelcache(
        oss("/models/qwen3/"),
        "llm",
        [("team-b", "qwen3", oss("/models/qwen3")), ("llm", "other", oss("/m/o"))],
    )
    assert errors == [
        "spec.storage.ossfs2 (bucket oss-models path /models/qwen3) is the same location as the storage of "
        "ModelCache team-b/qwen3 (spec.storage.ossfs2 (bucket oss-models path /models/qwen3)); two "
        "ModelCaches must not share or nest storage, pick another path"
    ]
    assert warnings == []


def test_nested_paths_clash_both_ways() -> None:
    inner, _ = validate_modelcache(oss("/models/qwen3"), "llm", [("llm", "all", oss("/models"))])
    outer, _ = validate_modelcache(oss("/models"), "llm", [("llm", "q", oss("/models/qwen3"))])
    root, _ = validate_modelcache(oss("/"), "llm", [("llm", "q", oss("/models/qwen3"))])
    assert len(inner) == len(outer) == len(root) == 1
    assert "(bucket oss-models path /models/qwen3) is inside the storage of ModelCache llm/all" in inner[0]
    assert "(bucket oss-models path /models) contains the storage of ModelCache llm/q" in outer[0]
    assert "path /) contains the storage of ModelCache llm/q" in root[0]


@pytest.mark.parametrize(
    "other",
    [
        oss("/models/qwen3", bucket="other-bucket"),
        oss("/models/qwen3-coder"),
        oss("/models/qwen"),
        cache({"nfs": {"server": "10.0.0.2", "path": "/models/qwen3"}}),
    ],
)
def test_different_locations_do_not_clash(other: dict[str, Any]) -> None:
    assert validate_modelcache(oss("/models/qwen3"), "llm", [("llm", "o", other)]) == ([], [])


def test_nfs_server_names_compare_case_insensitively() -> None:
    mine = cache({"nfs": {"server": "NAS.example.com", "path": "/exports/models"}})
    other = cache(
        {"nfs": {"server": "nas.example.com", "path": "/exports/models/", "mountOptions": ["nfsvers=4.1"]}}
    )
    errors, _ = validate_modelcache(mine, "llm", [("llm", "o", other)])
    assert errors[0].startswith("spec.storage.nfs (server nas.example.com path /exports/models) is the same")


def test_efs_clash_needs_the_same_access_point() -> None:
    root = cache({"efs": {"fileSystemId": "fs-0123456789abcdef0"}})
    explicit_root = cache({"efs": {"fileSystemId": "fs-0123456789abcdef0", "path": "/"}})
    via_ap = cache(
        {"efs": {"fileSystemId": "fs-0123456789abcdef0", "accessPointId": "fsap-0123456789abcdef0"}}
    )
    errors, _ = validate_modelcache(root, "llm", [("llm", "a", explicit_root), ("llm", "b", via_ap)])
    assert errors == [
        "spec.storage.efs (fileSystemId fs-0123456789abcdef0 path /) is the same location as the storage of "
        "ModelCache llm/a (spec.storage.efs (fileSystemId fs-0123456789abcdef0 path /)); two ModelCaches "
        "must not share or nest storage, pick another path"
    ]
    errors, _ = validate_modelcache(via_ap, "llm", [("llm", "b2", via_ap)])
    assert "accessPointId fsap-0123456789abcdef0 path /" in errors[0]


def test_host_path_warns_and_clashes() -> None:
    mine = cache({"hostPath": {"path": "/var/lib/models/qwen3"}})
    errors, warnings = validate_modelcache(
        mine, "dev", [("dev", "all", cache({"hostPath": {"path": "/var/lib"}}))]
    )
    assert warnings == [
        "spec.storage.hostPath is a node directory, for single-node development clusters only"
    ]
    assert errors == [
        "spec.storage.hostPath (path /var/lib/models/qwen3) is inside the storage of ModelCache dev/all "
        "(spec.storage.hostPath (path /var/lib)); two ModelCaches must not share or nest storage, pick "
        "another path"
    ]


def test_storage_class_caches_never_clash() -> None:
    sc = cache({"storageClass": {"name": "efs-sc"}})
    assert storage_location(sc) is None
    assert validate_modelcache(sc, "llm", [("llm", "o", sc)]) == ([], [])


def test_the_cache_itself_is_skipped_on_update() -> None:
    mine = oss("/models/qwen3")
    assert validate_modelcache(mine, "llm", [("llm", "qwen3", mine)], name="qwen3") == ([], [])
    errors, _ = validate_modelcache(mine, "llm", [("team-b", "qwen3", mine)], name="qwen3")
    assert len(errors) == 1


def test_stored_specs_with_unknown_fields_still_count() -> None:
    other = oss("/models/qwen3")
    other["storage"]["ossfs2"]["futureField"] = True
    other["futureTopLevel"] = {"x": 1}
    errors, _ = validate_modelcache(oss("/models//qwen3"), "llm", [("llm", "o", other)])
    assert len(errors) == 1
