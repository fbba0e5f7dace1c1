"""The scheduling gates of notReadyPolicy gate: the webhook adds one per unpublished cache, and the pure
check says which of them come off and why the others stay."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonpatch

from modelcache_operator.api.names import ANN_CACHES, ANN_FOLDERS, ANN_GATE_STATUS, ANN_PINNED, LABEL_INJECT
from modelcache_operator.api.v1alpha2 import ModelCacheSpec, ModelCacheStatus, Serving
from modelcache_operator.builders.gates import check_gates, gate_name, gated_caches
from modelcache_operator.webhook.injection import InjectionSettings
from modelcache_operator.webhook.patch import mutate_pod
from modelcache_operator.webhook.pinning import CacheView

SHA_A = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
SHA_B = "fedcba9876543210fedcba9876543210fedcba98"
SETTINGS = InjectionSettings(operator_image="ghcr.io/example/modelcache-operator:0.1.0")
# A qualified name: an optional DNS prefix, "/", and a name part of at most 63 characters.
QUALIFIED = re.compile(r"^[a-z0-9.-]+/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def downloading(name: str, policy: str | None = None, sha: str = SHA_A) -> CacheView:
    serving = {"notReadyPolicy": policy} if policy else {}
    spec = ModelCacheSpec.model_validate({"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}},
                                          "serving": serving})
    status = ModelCacheStatus.model_validate({
        "phase": "Downloading", "pvcName": f"mc-{name}", "pendingRevisionPath": f"all/{sha}",
        "downloadRef": {"namespace": "modelcache-system", "name": "dl-1", "shared": True, "requestedBy": "t/x"},
        "download": {"jobName": "j", "state": "Downloading", "requestedRevision": "main", "resolvedRevision": sha},
        "conditions": [{"type": "Ready", "status": "False", "reason": "DownloadInProgress", "message": "1/3 files",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    })
    return CacheView(name=name, spec=spec, status=status)


def pod(caches: str, gates: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "vllm", "image": "vllm/vllm-openai",
                                            "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}
    if gates is not None:
        spec["schedulingGates"] = [{"name": g} for g in gates]
    return {"metadata": {"name": "p", "namespace": "t", "labels": {LABEL_INJECT: "true"},
                         "annotations": {ANN_CACHES: caches}}, "spec": spec}


def admitted(pod_: dict[str, Any], caches: dict[str, CacheView]) -> dict[str, Any]:
    decision = mutate_pod(pod_, caches, SETTINGS, namespace="t")
    assert decision.allowed, decision.message
    result: dict[str, Any] = jsonpatch.apply_patch(pod_, decision.patch)
    return result


def cache_body(phase: str, published: str | None = None, reason: str = "", message: str = "",
               deleting: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": [
        {"type": "Ready", "status": str(phase == "Ready"), "reason": reason or phase, "message": message}]}
    if published:
        status.update(resolvedRevision=published, revisionPath=f"all/{published}")
    metadata = {"name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {"name": "c"}
    return {"metadata": metadata, "status": status}


def test_gate_is_the_default_policy() -> None:
    assert Serving().notReadyPolicy == "gate"


def test_the_webhook_gates_the_pod_per_unpublished_cache_and_mounts_the_pending_folder() -> None:
    out = admitted(pod("a,b", gates=["other.example/quota"]), {"a": downloading("a"), "b": downloading("b")})
    assert out["spec"]["schedulingGates"] == [
        {"name": "other.example/quota"}, {"name": "modelcache.dev/cache-a"}, {"name": "modelcache.dev/cache-b"}]
    # No wait container: the pod starts only once the folder is published.
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["modelcache-tools"]
    mount = next(m for m in out["spec"]["containers"][0]["volumeMounts"] if m["name"] == "mc-a")
    assert mount == {"name": "mc-a", "mountPath": "/models/a", "readOnly": True, "subPath": f"all/{SHA_A}"}
    annotations = out["metadata"]["annotations"]
    assert json.loads(annotations[ANN_PINNED]) == {"a": SHA_A, "b": SHA_A}
    assert json.loads(annotations["modelcache.dev/downloads"]) == {"a": "modelcache-system/dl-1",
                                                                    "b": "modelcache-system/dl-1"}
    assert mutate_pod(out, {"a": downloading("a"), "b": downloading("b")}, SETTINGS).patch == []


def test_wait_stays_available_and_adds_no_gate() -> None:
    out = admitted(pod("a"), {"a": downloading("a", policy="wait")})
    assert "schedulingGates" not in out["spec"]
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["modelcache-tools", "modelcache-wait-a"]


def test_the_pod_annotation_can_choose_gate_over_the_cache_policy() -> None:
    gated = pod("a")
    gated["metadata"]["annotations"]["modelcache.dev/not-ready-policy"] = "gate"
    out = admitted(gated, {"a": downloading("a", policy="deny")})
    assert out["spec"]["schedulingGates"] == [{"name": "modelcache.dev/cache-a"}]


def test_gate_on_a_failed_cache_with_nothing_published_is_denied() -> None:
    failed = downloading("a")
    assert failed.status is not None
    view = CacheView("a", failed.spec, failed.status.model_copy(update={"phase": "Failed"}))
    decision = mutate_pod(pod("a"), {"a": view}, SETTINGS, namespace="t")
    assert not decision.allowed
    assert decision.message is not None and "is gate, but a Failed cache does not become Ready" in decision.message


def test_long_cache_names_get_a_valid_distinct_gate_name() -> None:
    long_a, long_b = "a" * 60 + ".x", "a" * 60 + ".y"
    names = {gate_name(long_a), gate_name(long_b), gate_name("qwen3.coder")}
    assert len(names) == 3
    assert all(QUALIFIED.fullmatch(n) for n in names), names


def gated_pod(*caches: str, extra: tuple[str, ...] = ("other.example/quota",)) -> dict[str, Any]:
    p = pod(",".join(caches), gates=[*extra, *(gate_name(c) for c in caches)])
    p["metadata"]["annotations"].update({ANN_PINNED: json.dumps({c: SHA_A for c in caches}),
                                          ANN_FOLDERS: json.dumps({c: f"all/{SHA_A}" for c in caches})})
    return p


def test_only_our_gates_are_seen() -> None:
    p = gated_pod("a")
    p["spec"]["schedulingGates"].append({"name": "modelcache.dev/cache-not-listed"})
    assert gated_caches(p) == {"modelcache.dev/cache-a": "a"}


def test_a_gate_comes_off_when_its_cache_published_the_pinned_folder() -> None:
    p = gated_pod("a", "b")
    check = check_gates(p, {"a": cache_body("Ready", published=SHA_A), "b": cache_body("Downloading")})
    assert check.remove == ["modelcache.dev/cache-a"] and check.released == {"a": SHA_A}
    assert check.reports == {}
    # Other controllers' gates and the still-waiting one stay, in their order.
    assert check.remaining(p) == [{"name": "other.example/quota"}, {"name": "modelcache.dev/cache-b"}]


def test_a_later_revision_change_does_not_hold_a_published_pin() -> None:
    """Downloading again (a new spec revision) while the pinned one is still the published one."""
    check = check_gates(gated_pod("a"), {"a": cache_body("Downloading", published=SHA_A)})
    assert check.remove == ["modelcache.dev/cache-a"]


def test_a_failed_download_keeps_the_gate_and_names_the_reason() -> None:
    check = check_gates(gated_pod("a"), {"a": cache_body("Failed", reason="Unauthorized", message="401 from hub")})
    assert check.remove == []
    assert check.reports == {"a": 'DownloadFailed: ModelCache "a" failed (Unauthorized: 401 from hub); the pod '
                                  "stays gated until a retry publishes its revision"}


def test_a_deleted_or_deleting_cache_keeps_the_gate_and_says_so() -> None:
    gone = check_gates(gated_pod("a"), {"a": None})
    deleting = check_gates(gated_pod("a"), {"a": cache_body("Ready", published=SHA_A, deleting=True)})
    assert gone.remove == [] and gone.reports["a"].startswith('CacheDeleted: ModelCache "a" was deleted')
    assert deleting.remove == [] and deleting.reports["a"].startswith("CacheDeleting: ")


def test_another_published_revision_keeps_the_gate_and_says_to_recreate_the_pod() -> None:
    check = check_gates(gated_pod("a"), {"a": cache_body("Ready", published=SHA_B)})
    assert check.remove == []
    assert check.reports["a"].startswith(f'RevisionSuperseded: ModelCache "a" published revision {SHA_B}')


def test_reports_already_on_the_pod_are_not_new() -> None:
    p = gated_pod("a", "b")
    caches = {"a": cache_body("Failed", reason="NotFound"), "b": None}
    check = check_gates(p, caches)
    p["metadata"]["annotations"][ANN_GATE_STATUS] = json.dumps({"a": check.reports["a"]})
    assert set(check.new_reports(p)) == {"b"}
