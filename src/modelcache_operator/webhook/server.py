"""The admission server: its own process (`modelcache-operator webhook`, started by `run`), a thin aiohttp
shell around the pure `pod_decision` / `review_modelcache` / `review_modelstore` (review.py).

Why not kopf's admission server: kopf serves admission on the operator's event loop, where every watch
event of the pods being admitted (and every reconcile trigger) competes with it, and it builds the patch
by deep-copying the pod and diffing. In an A/B in one run (bursts of 100 and 300 pods) that was an
apiserver-measured p50 of 60-76 ms against 17-31 ms for this process, which now matches a Go webhook
replaying the same patch (BENCHMARKS.md, "Webhook admission latency").

Readiness (`/readyz` on the metrics port, the chart's readiness probe): ready once every view has listed,
unready again while any watch has been cut off from the apiserver for over store.STALE_SECONDS, and from
SIGTERM on, while admission is still answered for `shutdown_delay_seconds` so the Service can drop this
replica before it stops listening.

Failure policy: the chart registers the pod webhook with `failurePolicy: Fail`, scoped by the
`modelcache.dev/inject=true` objectSelector. While the operator is down, opted-in pods wait (their
controllers retry) instead of starting without their model; every other pod is never sent here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..operator.config import OperatorConfig
from ..operator.kube import load_api_client
from .injection import InjectionSettings
from .registration import register_webhooks
from .review import pod_decision, review_modelcache, review_modelstore
from .review import response as review_response
from .store import AdmissionViews, modelcache_feed, modelstore_feed, namespace_feed, run_watch

POD_WEBHOOK_ID = "inject-pods"
MODELCACHE_WEBHOOK_ID = "validate-modelcaches"
MODELSTORE_WEBHOOK_ID = "validate-modelstores"
# A refusal may come from a view that has not yet seen an object created a moment earlier (a Namespace, a
# ModelStore and a ModelCache in one `kubectl apply`): for this long, a change of the views re-reviews.
VIEW_GRACE_SECONDS = 2.0
MAX_REVIEW_BYTES = 8 * 1024 * 1024  # a pod with a large inline env or many containers still fits
log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
WEBHOOK_SECONDS = Histogram("modelcache_webhook_duration_seconds", "Pod mutation time inside the webhook.",
                            ["result"], registry=REGISTRY,
                            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1))
VALIDATE_SECONDS = Histogram("modelcache_webhook_validate_duration_seconds",
                             "ModelCache validation time inside the webhook.", ["result"], registry=REGISTRY,
                             buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1))
STORE_VALIDATE_SECONDS = Histogram("modelcache_webhook_store_validate_duration_seconds",
                                   "ModelStore validation time inside the webhook.", ["result"], registry=REGISTRY,
                                   buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1))


class AdmissionApp:
    def __init__(self, views: AdmissionViews, settings: InjectionSettings, allow_host_path: bool,
                 grace_seconds: float = VIEW_GRACE_SECONDS):
        self.views = views
        self.settings = settings
        self.allow_host_path = allow_host_path
        self.grace_seconds = grace_seconds
        self.serving = False  # set once the TLS site listens: before that, routing here would be refused
        self.draining = False  # set on SIGTERM: unready, still answering

    async def _review(self, request: web.Request) -> dict[str, Any] | None:
        try:
            review = json.loads(await request.read())
        except ValueError:
            return None
        inner = review.get("request") if isinstance(review, dict) else None
        return inner if isinstance(inner, dict) else None

    async def inject_pods(self, request: web.Request) -> web.Response:
        review = await self._review(request)
        if review is None:
            return web.Response(status=400, text="expected an admission.k8s.io/v1 AdmissionReview")
        started = time.perf_counter()
        decision = pod_decision(review, self.views.caches.view, self.settings)
        WEBHOOK_SECONDS.labels(result="allowed" if decision.allowed else "denied").observe(
            time.perf_counter() - started)
        return _json(review_response(review, decision.allowed, patch=decision.patch, warnings=decision.warnings,
                                     message=decision.message, code=403))

    async def validate_modelcaches(self, request: web.Request) -> web.Response:
        review = await self._review(request)
        if review is None:
            return web.Response(status=400, text="expected an admission.k8s.io/v1 AdmissionReview")
        views = self.views
        return _json(await self._settled(VALIDATE_SECONDS, lambda: review_modelcache(
            review, views.stores.snapshot(), views.namespaces.labels, self.allow_host_path),
            wait=not self._sees_what_it_names(review)))

    async def validate_modelstores(self, request: web.Request) -> web.Response:
        review = await self._review(request)
        if review is None:
            return web.Response(status=400, text="expected an admission.k8s.io/v1 AdmissionReview")
        return _json(await self._settled(STORE_VALIDATE_SECONDS, lambda: review_modelstore(
            review, self.views.stores.snapshot(), self.allow_host_path), wait=False))

    def _sees_what_it_names(self, review: dict[str, Any]) -> bool:
        """Whether the views hold the namespace and the store (or a default one) a cache names: if not, they
        may have been created a moment ago, in the same apply, and the watch has not brought them yet."""
        obj = review.get("object") or {}
        namespace = review.get("namespace") or (obj.get("metadata") or {}).get("namespace") or ""
        store = (obj.get("spec") or {}).get("store")
        stores = self.views.stores.snapshot()
        named = store in stores if store else any(s is not None and s.default for s in stores.values())
        return named and self.views.namespaces.labels(str(namespace)) is not None

    async def _settled(self, seconds: Histogram, review: Callable[[], dict[str, Any]],
                       wait: bool) -> dict[str, Any]:
        """The review's answer. With `wait`, a refusal is reviewed again whenever the views change, for
        grace_seconds. The histogram gets the first review's time, not the grace."""
        started = time.perf_counter()
        version, answer = self.views.version(), review()
        seconds.labels(result="allowed" if answer["response"]["allowed"] else "denied").observe(
            time.perf_counter() - started)
        deadline = time.monotonic() + (self.grace_seconds if wait else 0.0)
        while not answer["response"]["allowed"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if self.views.version() != version:
                version, answer = self.views.version(), review()
        return answer

    @web.middleware
    async def close_when_draining(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """While draining, every answer closes its connection: the apiserver must not keep a connection to
        this replica that the exit would cut under a request it has just written."""
        response = await handler(request)
        if self.draining:
            response.force_close()
        return response

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def ready(self, _: web.Request) -> web.Response:
        reason = ("shutting down" if self.draining else self.views.unready_reason()
                  or (None if self.serving else "admission not listening yet"))
        return web.Response(status=503 if reason else 200, text=reason or "ok")


def _json(answer: dict[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(answer, separators=(",", ":")), content_type="application/json")


async def _serve(config: OperatorConfig, tls: ssl.SSLContext, app: AdmissionApp, stopping: threading.Event) -> None:
    admission = web.Application(client_max_size=MAX_REVIEW_BYTES, middlewares=[app.close_when_draining])
    admission.router.add_post(f"/{POD_WEBHOOK_ID}", app.inject_pods)
    admission.router.add_post(f"/{MODELCACHE_WEBHOOK_ID}", app.validate_modelcaches)
    admission.router.add_post(f"/{MODELSTORE_WEBHOOK_ID}", app.validate_modelstores)
    observability = web.Application()
    observability.router.add_get("/metrics", app.metrics)
    observability.router.add_get("/readyz", app.ready)
    side = web.AppRunner(observability, access_log=None)
    await side.setup()
    await web.TCPSite(side, config.webhook_host, config.webhook_metrics_port).start()
    # Listen only once the views are complete: a pod admitted earlier would find its cache "missing".
    while not app.views.synced():
        await asyncio.sleep(0.05)
    main = web.AppRunner(admission, access_log=None)
    await main.setup()
    await web.TCPSite(main, config.webhook_host, config.webhook_port, ssl_context=tls).start()
    app.serving = True
    log.info("admission webhook serving on %s:%d", config.webhook_host, config.webhook_port)
    try:
        while not stopping.is_set():
            await asyncio.sleep(0.5)
    finally:
        await main.cleanup()
        await side.cleanup()


def serve(config: OperatorConfig, cert: str, key: str) -> None:
    """Runs until SIGTERM/SIGINT. Registers the webhook configurations itself only in development
    (MODELCACHE_WEBHOOK_MANAGED); the chart renders its own."""
    client = load_api_client()
    client.user_agent = "modelcache-operator-webhook"
    scopes = list(config.namespaces) or [""]
    views = AdmissionViews.empty(cache_scopes=len(scopes))
    stopping = threading.Event()
    feeds = [*((views.caches, modelcache_feed(client, scope)) for scope in scopes),
             (views.stores, modelstore_feed(client)), (views.namespaces, namespace_feed(client))]
    for view, feed in feeds:
        threading.Thread(target=run_watch, args=(view, feed, stopping.is_set, views.contact), daemon=True,
                         name=f"watch-{feed.what}").start()
    if config.webhook_managed_name:
        register_webhooks(client, config.webhook_managed_name, config, Path(cert))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)  # before anything starts: a bad key path fails the process at once
    loop = asyncio.new_event_loop()
    settings = InjectionSettings(operator_image=config.image, image_pull_policy=config.image_pull_policy,
                                 store_lookup=views.stores.get)
    app = AdmissionApp(views, settings, config.allow_host_path)

    def drain() -> None:
        if not app.draining:
            app.draining = True
            log.info("shutting down: unready now, answering admission for %.0fs more", config.shutdown_delay_seconds)
            loop.call_later(config.shutdown_delay_seconds, stopping.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, drain)
    try:
        loop.run_until_complete(_serve(config, tls, app, stopping))
    finally:
        loop.close()
