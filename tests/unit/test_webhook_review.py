"""AdmissionReview translation (webhook/review.py), the webhook's watch-fed views (store.py), the server's
routes (server.py) and the development registration (registration.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import jsonpatch
import kubernetes
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.webhook.injection import InjectionSettings
from modelcache_operator.webhook.pinning import CacheView
from modelcache_operator.webhook.registration import webhook_configurations
from modelcache_operator.webhook.review import pod_decision, response, review_modelcache, review_modelstore
from modelcache_operator.webhook.server import MODELCACHE_WEBHOOK_ID, MODELSTORE_WEBHOOK_ID, AdmissionApp
from modelcache_operator.webhook.store import (
    READ_TIMEOUT_SECONDS,
    STALE_SECONDS,
    WATCH_SECONDS,
    AdmissionViews,
    Contact,
    Feed,
    ModelCacheStore,
    ModelStoreView,
    NamespaceView,
    run_watch,
)

SHA = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
SETTINGS = InjectionSettings(operator_image="ghcr.io/example/modelcache-operator:0.1.0")
LABELS = {"kubernetes.io/metadata.name": "llm", "team": "llm"}


def cache_object(name: str, namespace: str = "llm", ready: bool = True, store: str | None = "shared"
                 ) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Ready", "resolvedRevision": SHA, "revisionPath": f"all/{SHA}",
                              "pvcName": f"modelcache-{name}", "sizeBytes": 1 << 30} if ready else {
        "phase": "Downloading"}
    spec: dict[str, Any] = {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}}
    if store:
        spec["store"] = store
    return {"apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
            "spec": spec, "status": status}


def store_object(name: str, path: str = "/exports/models", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelStore", "metadata": {"name": name},
            "spec": {"nfs": {"server": "10.0.0.2", "path": path},
                     "namespaceSelector": {"matchLabels": {"team": "llm"}}, **fields}}


def namespace_object(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}}}


def stores(*objects: dict[str, Any]) -> dict[str, api.ModelStoreSpec | None]:
    return {o["metadata"]["name"]: api.ModelStoreSpec.model_validate(o["spec"]) for o in objects}


def labels_of(namespace: str) -> dict[str, str] | None:
    return LABELS if namespace == "llm" else None


def pod_request(caches: str, namespace: str = "llm") -> dict[str, Any]:
    # generateName pods reach admission without metadata.namespace: the request carries it.
    return {"uid": "u-1", "namespace": namespace, "operation": "CREATE", "object": {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "server-", "labels": {"modelcache.dev/inject": "true"},
                     "annotations": {"modelcache.dev/caches": caches}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai",
                                 "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "16Gi"}}}]}}}


def cache_request(operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    request = {"uid": "u-2", "operation": operation, "namespace": obj["metadata"]["namespace"], "object": obj}
    if old is not None:
        request["oldObject"] = old
    return request


def store_request(operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    request = {"uid": "u-3", "operation": operation, "object": obj}
    if old is not None:
        request["oldObject"] = old
    return request


def decoded_patch(answer: dict[str, Any]) -> list[dict[str, Any]]:
    assert answer["response"]["patchType"] == "JSONPatch"
    return list(json.loads(base64.b64decode(answer["response"]["patch"])))


# ----- pods -----


def test_pod_is_patched_from_the_store_using_the_request_namespace() -> None:
    caches = ModelCacheStore()
    caches.replace_scope("", [cache_object("qwen")])
    request = pod_request(" qwen ")
    decision = pod_decision(request, caches.view, SETTINGS)
    answer = response(request, decision.allowed, patch=decision.patch, warnings=decision.warnings)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "u-1" and answer["response"]["allowed"] is True
    pod = jsonpatch.apply_patch(request["object"], decoded_patch(answer))
    [volume] = [v for v in pod["spec"]["volumes"] if v.get("persistentVolumeClaim")]
    assert volume["persistentVolumeClaim"] == {"claimName": "modelcache-qwen", "readOnly": True}
    [mount] = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["subPath"] == f"all/{SHA}"
    assert pod["metadata"]["annotations"]["modelcache.dev/injected"] == "true"


def test_a_cache_in_another_namespace_is_not_used() -> None:
    caches = ModelCacheStore()
    caches.replace_scope("", [cache_object("qwen", namespace="other")])
    decision = pod_decision(pod_request("qwen"), caches.view, SETTINGS)
    assert not decision.allowed and decision.message
    assert decision.message.startswith('ModelCache "qwen" not found in namespace "llm"')
    answer = response(pod_request("qwen"), False, message=decision.message, code=403)
    assert answer["response"]["status"] == {"code": 403, "message": decision.message}
    assert "patch" not in answer["response"]


def test_a_namespaced_cache_name_is_denied_without_a_lookup() -> None:
    looked_up: list[tuple[str, str]] = []

    def lookup(namespace: str, name: str) -> CacheView | None:
        looked_up.append((namespace, name))
        return None

    decision = pod_decision(pod_request("other/qwen"), lookup, SETTINGS)
    assert not decision.allowed and decision.message is not None
    assert "a pod cannot use another namespace's cache" in decision.message
    assert looked_up == []


# ----- views -----


def test_invalid_stored_cache_reads_as_missing() -> None:
    caches = ModelCacheStore()
    broken = cache_object("qwen")
    broken["spec"]["source"] = {"huggingface": {"repo": ["not", "a", "string"]}}
    caches.replace_scope("", [broken])
    assert caches.view("llm", "qwen") is None
    assert caches.snapshot() == {("llm", "qwen"): None}


def test_cache_events_and_relist_replace_only_their_scope() -> None:
    caches = ModelCacheStore()
    assert not caches.synced(2)
    caches.replace_scope("a", [cache_object("one", namespace="a")])
    caches.replace_scope("b", [cache_object("two", namespace="b")])
    assert caches.synced(2)
    caches.apply_event("ADDED", cache_object("three", namespace="a"))
    caches.apply_event("MODIFIED", cache_object("two", namespace="b", ready=False))
    view = caches.view("b", "two")
    assert isinstance(view, CacheView) and view.status is not None and view.status.phase == "Downloading"
    caches.apply_event("DELETED", cache_object("one", namespace="a"))
    assert caches.view("a", "one") is None and caches.view("a", "three") is not None
    caches.replace_scope("a", [])  # a relist of scope "a" that no longer has "three"
    assert sorted(caches.snapshot()) == [("b", "two")]


def test_store_view_keeps_unparsable_stores_as_none() -> None:
    view = ModelStoreView()
    broken = store_object("broken")
    del broken["spec"]["namespaceSelector"]
    view.replace_scope("", [store_object("shared"), broken])
    snapshot = view.snapshot()
    assert sorted(snapshot) == ["broken", "shared"] and snapshot["broken"] is None
    shared = snapshot["shared"]
    assert isinstance(shared, api.ModelStoreSpec) and shared.nfs is not None
    view.apply_event("MODIFIED", store_object("shared", default=True))
    assert (view.get("shared") or api.ModelStoreSpec(namespaceSelector=api.LabelSelector())).default is True
    view.apply_event("DELETED", store_object("broken"))
    assert sorted(view.snapshot()) == ["shared"]


def test_namespace_view_keeps_labels() -> None:
    view = NamespaceView()
    view.replace_scope("", [namespace_object("llm", team="llm"), {"metadata": {"name": "bare"}}])
    assert view.labels("llm") == LABELS and view.labels("bare") == {} and view.labels("gone") is None
    view.apply_event("MODIFIED", namespace_object("llm", team="research"))
    assert view.labels("llm") == {"kubernetes.io/metadata.name": "llm", "team": "research"}


def test_views_are_synced_once_every_view_listed() -> None:
    views = AdmissionViews.empty(cache_scopes=2)
    version = views.version()
    for view, scope in ((views.caches, "a"), (views.caches, "b"), (views.stores, "")):
        view.replace_scope(scope, [])
        assert not views.synced()
    views.namespaces.replace_scope("", [])
    assert views.synced()
    assert views.version() == version + 4


def test_run_watch_lists_then_applies_events_through_the_feed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Namespaces come from a typed client: `plain` turns its model objects into dicts."""
    client = kubernetes.client.ApiClient()
    listed = kubernetes.client.V1NamespaceList(
        items=[kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(
            name="llm", labels={"team": "llm"}))],
        metadata=kubernetes.client.V1ListMeta(resource_version="7"))
    renamed = kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name="new", labels={"a": "b"}))
    streamed: list[dict[str, Any]] = []
    view = NamespaceView()
    stop = [False]

    class FakeWatch:
        def stream(self, func: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
            streamed.append(kwargs)
            assert view.labels("llm") == {"team": "llm"}, "the list landed before the watch"
            yield {"type": "ADDED", "object": renamed}
            yield {"type": "BOOKMARK", "object": renamed}
            stop[0] = True
            yield {"type": "DELETED", "object": listed.items[0]}

    monkeypatch.setattr(kubernetes.watch, "Watch", FakeWatch)
    feed = Feed("Namespaces", lambda **_: listed, plain=client.sanitize_for_serialization)
    run_watch(view, feed, lambda: stop[0])
    assert streamed == [{"resource_version": "7", "timeout_seconds": WATCH_SECONDS,
                         "_request_timeout": READ_TIMEOUT_SECONDS}]
    assert view.snapshot() == {"new": {"a": "b"}}
    assert view.synced()


def test_a_feed_silent_past_the_bound_makes_the_replica_unready() -> None:
    now = [100.0]
    views = AdmissionViews.empty()
    views.contact = Contact(clock=lambda: now[0])
    assert views.unready_reason() == "admission views not synced"
    for view in (views.caches, views.stores, views.namespaces):
        view.replace_scope("", [])
    for feed in ("ModelCaches in all namespaces", "ModelStores", "Namespaces"):
        views.contact.heard(feed)
    assert views.unready_reason() is None
    now[0] += STALE_SECONDS - 1
    views.contact.heard("ModelStores")
    views.contact.heard("Namespaces")
    assert views.unready_reason() is None, "within the bound"
    now[0] += 2
    assert views.unready_reason() == (
        f"no contact with the apiserver for over {STALE_SECONDS:.0f}s: ModelCaches in all namespaces")
    views.contact.heard("ModelCaches in all namespaces")
    assert views.unready_reason() is None, "ready again once the feed hears from the apiserver"


# ----- ModelCache reviews -----


def test_a_cache_whose_store_is_missing_is_refused_with_422_naming_it() -> None:
    answer = review_modelcache(cache_request("CREATE", cache_object("qwen", store="fast")),
                               stores(store_object("shared")), labels_of, False)
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"] == {"code": 422,
                                            "message": 'ModelStore "fast" (spec.store) does not exist'}


def test_a_cache_is_checked_against_its_namespace_labels() -> None:
    obj = cache_object("qwen", namespace="research")
    answer = review_modelcache(cache_request("CREATE", obj), stores(store_object("shared")), labels_of, False)
    assert answer["response"]["status"]["code"] == 422
    assert 'does not allow namespace "research"' in answer["response"]["status"]["message"]
    answer = review_modelcache(cache_request("CREATE", cache_object("qwen")), stores(store_object("shared")),
                               labels_of, False)
    assert answer["response"] == {"uid": "u-2", "allowed": True}


def test_a_host_path_store_cache_is_allowed_with_a_warning_when_enabled() -> None:
    dev = {"metadata": {"name": "dev"}, "spec": {"hostPath": {"path": "/var/lib/models"}, "namespaceSelector": {}}}
    answer = review_modelcache(cache_request("CREATE", cache_object("qwen", store="dev")), stores(dev), labels_of,
                               True)
    assert answer["response"]["allowed"] is True
    assert answer["response"]["warnings"] == [
        'ModelStore "dev" is a hostPath store (a node directory), for single-node development clusters only']


def test_an_update_that_keeps_the_store_is_allowed_even_when_the_store_is_gone() -> None:
    """Finalizer removal and deletion of a cache whose store disappeared must never be blocked."""
    obj = cache_object("qwen")
    old = json.loads(json.dumps(obj))
    obj["metadata"]["finalizers"] = []
    answer = review_modelcache(cache_request("UPDATE", obj, old), {}, labels_of, False)
    assert answer["response"] == {"uid": "u-2", "allowed": True}
    # Without the old object there is nothing to compare with: the cache is validated.
    answer = review_modelcache(cache_request("UPDATE", obj), {}, labels_of, False)
    assert answer["response"]["status"]["code"] == 422


def test_an_update_that_changes_the_store_is_validated() -> None:
    old = cache_object("qwen", store=None)
    answer = review_modelcache(cache_request("UPDATE", cache_object("qwen", store="fast"), old),
                               stores(store_object("shared")), labels_of, False)
    assert answer["response"]["status"] == {"code": 422,
                                            "message": 'ModelStore "fast" (spec.store) does not exist'}


def test_delete_is_never_reviewed() -> None:
    assert review_modelcache(cache_request("DELETE", cache_object("qwen", store="gone")), {}, labels_of,
                             False)["response"]["allowed"] is True
    assert review_modelstore(store_request("DELETE", store_object("x")), {}, False)["response"]["allowed"] is True


# ----- ModelStore reviews -----


def test_an_overlapping_store_is_refused_with_422() -> None:
    answer = review_modelstore(store_request("CREATE", store_object("new", "/exports/models/qwen")),
                               stores(store_object("shared")), False)
    assert answer["response"]["status"] == {"code": 422, "message": (
        'the nfs root /exports/models/qwen is inside the root /exports/models of ModelStore "shared"; two stores '
        "must not share or nest their roots")}


def test_a_store_update_is_refused_only_for_new_problems() -> None:
    others = stores(store_object("shared", default=True), store_object("nested", "/exports/models/qwen"))
    nested = store_object("nested", "/exports/models/qwen")
    relabelled = store_object("nested", "/exports/models/qwen", namespaceSelector={"matchLabels": {"t": "x"}})
    # It got in before the webhook saw "shared": editing it is fine, and so is removing its finalizer.
    answer = review_modelstore(store_request("UPDATE", relabelled, nested), others, False)
    assert answer["response"] == {"uid": "u-3", "allowed": True}
    # Marking it default as well is a new problem.
    defaulted = store_object("nested", "/exports/models/qwen", default=True)
    answer = review_modelstore(store_request("UPDATE", defaulted, nested), others, False)
    assert answer["response"]["status"]["code"] == 422
    assert answer["response"]["status"]["message"].startswith(
        'spec.default: ModelStore "shared" is already the default store')


def test_a_store_warning_is_passed_on() -> None:
    answer = review_modelstore(store_request("CREATE", store_object("open", namespaceSelector={})), {}, False)
    assert answer["response"] == {"uid": "u-3", "allowed": True, "warnings": [
        "spec.namespaceSelector is {}, which allows every namespace to use this store"]}


# ----- the server -----


def _post(app: AdmissionApp, path: str, request: dict[str, Any], after: Callable[[], None] | None = None
          ) -> dict[str, Any]:
    """POST one AdmissionReview to the app's handler; `after` runs 0.2 s into the request."""
    routes = {MODELCACHE_WEBHOOK_ID: app.validate_modelcaches, MODELSTORE_WEBHOOK_ID: app.validate_modelstores}

    async def run() -> dict[str, Any]:
        web_app = web.Application()
        web_app.router.add_post(f"/{path}", routes[path])
        async with TestClient(TestServer(web_app)) as client:
            pending = asyncio.ensure_future(client.post(f"/{path}", json={"request": request}))
            if after is not None:
                await asyncio.sleep(0.2)
                after()
            reply = await pending
            assert reply.status == 200
            answer: dict[str, Any] = await reply.json()
            return answer

    return asyncio.run(run())


def test_server_refusal_waits_for_a_store_created_a_moment_earlier() -> None:
    """A ModelStore and a ModelCache in one `kubectl apply`: the cache's review may run before the store's
    watch event lands. The refusal is reviewed again when the views change."""
    views = AdmissionViews.empty()
    views.namespaces.replace_scope("", [namespace_object("llm", team="llm")])
    app = AdmissionApp(views, SETTINGS, allow_host_path=False, grace_seconds=1.0)
    started = time.monotonic()
    answer = _post(app, "validate-modelcaches", cache_request("CREATE", cache_object("qwen")),
                   after=lambda: views.stores.apply_event("ADDED", store_object("shared")))
    assert answer["response"]["allowed"] is True
    assert 0.2 <= time.monotonic() - started < 1.0, "allowed once the store arrived, not after the grace"

    answer = _post(app, "validate-modelcaches", cache_request("CREATE", cache_object("qwen", store="fast")))
    assert answer["response"]["status"] == {"code": 422,
                                            "message": 'ModelStore "fast" (spec.store) does not exist'}


def test_server_validates_modelstores() -> None:
    views = AdmissionViews.empty()
    views.stores.replace_scope("", [store_object("shared")])
    app = AdmissionApp(views, SETTINGS, allow_host_path=False, grace_seconds=0.1)
    hostpath = {"metadata": {"name": "dev"}, "spec": {"hostPath": {"path": "/srv"}, "namespaceSelector": {}}}
    answer = _post(app, "validate-modelstores", store_request("CREATE", hostpath))
    assert answer["response"]["status"]["code"] == 422
    assert "spec.hostPath" in answer["response"]["status"]["message"]
    assert "stores.allowHostPath" in answer["response"]["status"]["message"]


# ----- registration -----


def test_development_registration_validates_modelstores_cluster_wide() -> None:
    mutating, validating = webhook_configurations("dev", "https://127.0.0.1:9443", b"ca", ("llm",))
    assert [h["name"] for h in mutating["webhooks"]] == ["inject-pods.modelcache.dev"]
    caches, modelstores = validating["webhooks"]
    assert caches["name"] == "validate-modelcaches.modelcache.dev" and "namespaceSelector" in caches
    assert modelstores["name"] == "validate-modelstores.modelcache.dev"
    assert modelstores["clientConfig"]["url"] == "https://127.0.0.1:9443/validate-modelstores"
    assert modelstores["rules"] == [{"apiGroups": ["modelcache.dev"], "apiVersions": ["v1alpha2"],
                                     "resources": ["modelstores"], "operations": ["CREATE", "UPDATE"],
                                     "scope": "Cluster"}]
    assert "namespaceSelector" not in modelstores
    assert modelstores["failurePolicy"] == "Fail" and modelstores["sideEffects"] == "None"


def test_a_draining_server_answers_unready_and_closes_each_connection() -> None:
    """After SIGTERM admission is still answered, but no connection is kept for a request the exit would cut.
    Before its TLS site listens, a synced replica is not ready either."""
    views = AdmissionViews.empty()
    views.stores.replace_scope("", [store_object("shared")])
    app = AdmissionApp(views, SETTINGS, allow_host_path=False, grace_seconds=0.0)
    for view in (views.caches, views.namespaces):
        view.replace_scope("", [])
    views.contact.heard("ModelStores")
    assert asyncio.run(app.ready(None)).text == "admission not listening yet"  # type: ignore[arg-type]
    app.serving = True
    review = store_request("CREATE", store_object("other"))

    async def run() -> list[tuple[int, str | None, int, str]]:
        web_app = web.Application(middlewares=[app.close_when_draining])
        web_app.router.add_post(f"/{MODELSTORE_WEBHOOK_ID}", app.validate_modelstores)
        web_app.router.add_get("/readyz", app.ready)
        seen = []
        async with TestClient(TestServer(web_app)) as client:
            for draining in (False, True):
                app.draining = draining
                reply = await client.post(f"/{MODELSTORE_WEBHOOK_ID}", json={"request": review})
                ready = await client.get("/readyz")
                seen.append((reply.status, reply.headers.get("Connection"), ready.status, await ready.text()))
        return seen

    serving, draining = asyncio.run(run())
    assert serving[0] == 200 and serving[1] != "close" and serving[2:] == (200, "ok")
    assert draining == (200, "close", 503, "shutting down")
