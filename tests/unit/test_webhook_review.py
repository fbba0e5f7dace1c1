"""AdmissionReview translation (webhook/review.py) and the webhook's watch-fed ModelCache view (store.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch

from modelcache_operator.webhook.patch import CacheView, InjectionSettings
from modelcache_operator.webhook.review import pod_decision, response, review_modelcache
from modelcache_operator.webhook.store import ModelCacheStore

SHA = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
SETTINGS = InjectionSettings(operator_image="ghcr.io/example/modelcache-operator:0.1.0")


def cache_object(name: str, namespace: str = "llm", path: str = "/exports/a", ready: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Ready", "resolvedRevision": SHA, "pvcName": f"modelcache-{name}",
                              "sizeBytes": 1 << 30} if ready else {"phase": "Downloading"}
    return {"apiVersion": "modelcache.dev/v1alpha1", "kind": "ModelCache",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
            "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}},
                     "storage": {"nfs": {"server": "10.0.0.2", "path": path}, "capacity": "10Gi"}},
            "status": status}


def pod_request(caches: str, namespace: str = "llm") -> dict[str, Any]:
    # generateName pods reach admission without metadata.namespace: the request carries it.
    return {"uid": "u-1", "namespace": namespace, "operation": "CREATE", "object": {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "server-", "labels": {"modelcache.dev/inject": "true"},
                     "annotations": {"modelcache.dev/caches": caches}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai",
                                 "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "16Gi"}}}]}}}


def decoded_patch(answer: dict[str, Any]) -> list[dict[str, Any]]:
    assert answer["response"]["patchType"] == "JSONPatch"
    return list(json.loads(base64.b64decode(answer["response"]["patch"])))


def test_pod_is_patched_from_the_store_using_the_request_namespace() -> None:
    store = ModelCacheStore()
    store.replace_scope("", [cache_object("qwen")])
    request = pod_request(" qwen ")
    decision = pod_decision(request, store.view, SETTINGS)
    answer = response(request, decision.allowed, patch=decision.patch, warnings=decision.warnings)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "u-1" and answer["response"]["allowed"] is True
    pod = jsonpatch.apply_patch(request["object"], decoded_patch(answer))
    [volume] = [v for v in pod["spec"]["volumes"] if v.get("persistentVolumeClaim")]
    assert volume["persistentVolumeClaim"] == {"claimName": "modelcache-qwen", "readOnly": True}
    assert pod["metadata"]["annotations"]["modelcache.dev/injected"] == "true"


def test_a_cache_in_another_namespace_is_not_used() -> None:
    store = ModelCacheStore()
    store.replace_scope("", [cache_object("qwen", namespace="other")])
    decision = pod_decision(pod_request("qwen"), store.view, SETTINGS)
    assert not decision.allowed and decision.message and "qwen" in decision.message
    answer = response(pod_request("qwen"), False, message=decision.message, code=403)
    assert answer["response"]["status"] == {"code": 403, "message": decision.message}
    assert "patch" not in answer["response"]


def test_invalid_stored_cache_reads_as_missing() -> None:
    store = ModelCacheStore()
    broken = cache_object("qwen")
    broken["spec"]["source"] = {"huggingface": {"repo": ["not", "a", "string"]}}
    store.replace_scope("", [broken])
    assert store.view("llm", "qwen") is None
    assert [name for _, name, _ in store.specs()] == ["qwen"], "its spec still counts for storage clashes"


def test_store_events_and_relist_replace_only_their_scope() -> None:
    store = ModelCacheStore()
    assert not store.synced(2)
    store.replace_scope("a", [cache_object("one", namespace="a")])
    store.replace_scope("b", [cache_object("two", namespace="b")])
    assert store.synced(2)
    store.apply_event("ADDED", cache_object("three", namespace="a"))
    store.apply_event("MODIFIED", cache_object("two", namespace="b", ready=False))
    view = store.view("b", "two")
    assert isinstance(view, CacheView) and view.status is not None and view.status.phase == "Downloading"
    store.apply_event("DELETED", cache_object("one", namespace="a"))
    assert store.view("a", "one") is None and store.view("a", "three") is not None
    store.replace_scope("a", [])  # a relist of scope "a" that no longer has "three"
    assert sorted((ns, name) for ns, name, _ in store.specs()) == [("b", "two")]


def test_clashing_cache_is_refused_with_422_naming_the_field() -> None:
    others = [("llm", "first", cache_object("first")["spec"])]
    second = cache_object("second")
    answer = review_modelcache({"uid": "u-2", "operation": "CREATE", "namespace": "llm", "object": second}, others)
    assert answer["response"]["allowed"] is False and answer["response"]["status"]["code"] == 422
    message = answer["response"]["status"]["message"]
    assert "spec.storage" in message and "llm/first" in message


def test_update_that_keeps_storage_is_allowed_even_when_it_clashes() -> None:
    """Two caches that slipped past the webhook must still accept finalizer and annotation updates."""
    others = [("llm", "first", cache_object("first")["spec"])]
    second = cache_object("second")
    answer = review_modelcache({"uid": "u-3", "operation": "UPDATE", "namespace": "llm", "object": second,
                                "oldObject": second}, others)
    assert answer["response"] == {"uid": "u-3", "allowed": True}


def test_update_of_itself_does_not_clash_with_itself() -> None:
    mine = cache_object("mine")
    old = cache_object("mine", path="/exports/old")
    answer = review_modelcache({"uid": "u-4", "operation": "UPDATE", "namespace": "llm", "object": mine,
                                "oldObject": old}, [("llm", "mine", old["spec"])])
    assert answer["response"]["allowed"] is True
