"""The admission server: its own process (`modelcache-operator webhook`, started by `run`), a thin aiohttp
shell around the pure `pod_decision` / `review_modelcache` (review.py).

Why not kopf's admission server: kopf serves admission on the operator's event loop, where every watch
event of the pods being admitted (and every reconcile trigger) competes with it, and it builds the patch
by deep-copying the pod and diffing. In an A/B in one run (bursts of 100 and 300 pods) that was an
apiserver-measured p50 of 60-76 ms against 17-31 ms for this process, which now matches a Go webhook
replaying the same patch (BENCHMARKS.md, "Webhook admission latency").

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
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..operator.config import OperatorConfig
from ..operator.kube import load_api_client
from .patch import InjectionSettings
from .registration import register_webhooks
from .review import pod_decision, review_modelcache
from .review import response as review_response
from .store import ModelCacheStore, run_watch

POD_WEBHOOK_ID = "inject-pods"
MODELCACHE_WEBHOOK_ID = "validate-modelcaches"
MAX_REVIEW_BYTES = 8 * 1024 * 1024  # a pod with a large inline env or many containers still fits
log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
WEBHOOK_SECONDS = Histogram("modelcache_webhook_duration_seconds", "Pod mutation time inside the webhook.",
                            ["result"], registry=REGISTRY,
                            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1))
VALIDATE_SECONDS = Histogram("modelcache_webhook_validate_duration_seconds",
                             "ModelCache validation time inside the webhook.", ["result"], registry=REGISTRY,
                             buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1))


class AdmissionApp:
    def __init__(self, store: ModelCacheStore, settings: InjectionSettings, scopes: int):
        self.store = store
        self.settings = settings
        self.scopes = scopes

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
        decision = pod_decision(review, self.store.view, self.settings)
        WEBHOOK_SECONDS.labels(result="allowed" if decision.allowed else "denied").observe(
            time.perf_counter() - started)
        return _json(review_response(review, decision.allowed, patch=decision.patch, warnings=decision.warnings,
                                     message=decision.message, code=403))

    async def validate_modelcaches(self, request: web.Request) -> web.Response:
        review = await self._review(request)
        if review is None:
            return web.Response(status=400, text="expected an admission.k8s.io/v1 AdmissionReview")
        started = time.perf_counter()
        answer = review_modelcache(review, self.store.specs())
        VALIDATE_SECONDS.labels(result="allowed" if answer["response"]["allowed"] else "denied").observe(
            time.perf_counter() - started)
        return _json(answer)

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def ready(self, _: web.Request) -> web.Response:
        synced = self.store.synced(self.scopes)
        return web.Response(status=200 if synced else 503, text="ok" if synced else "ModelCache view not synced")


def _json(answer: dict[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(answer, separators=(",", ":")), content_type="application/json")


async def _serve(config: OperatorConfig, tls: ssl.SSLContext, app: AdmissionApp, stopping: threading.Event) -> None:
    admission = web.Application(client_max_size=MAX_REVIEW_BYTES)
    admission.router.add_post(f"/{POD_WEBHOOK_ID}", app.inject_pods)
    admission.router.add_post(f"/{MODELCACHE_WEBHOOK_ID}", app.validate_modelcaches)
    observability = web.Application()
    observability.router.add_get("/metrics", app.metrics)
    observability.router.add_get("/readyz", app.ready)
    side = web.AppRunner(observability, access_log=None)
    await side.setup()
    await web.TCPSite(side, config.webhook_host, config.webhook_metrics_port).start()
    # Listen only once the view is complete: a pod admitted earlier would find its cache "missing".
    while not app.store.synced(app.scopes):
        await asyncio.sleep(0.05)
    main = web.AppRunner(admission, access_log=None)
    await main.setup()
    await web.TCPSite(main, config.webhook_host, config.webhook_port, ssl_context=tls).start()
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
    store = ModelCacheStore()
    scopes = list(config.namespaces) or [""]
    stopping = threading.Event()
    for scope in scopes:
        threading.Thread(target=run_watch, args=(store, client, scope, stopping.is_set), daemon=True,
                         name=f"watch-{scope or 'all'}").start()
    if config.webhook_managed_name:
        register_webhooks(client, config.webhook_managed_name, config, Path(cert))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)  # before anything starts: a bad key path fails the process at once
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    app = AdmissionApp(store, InjectionSettings(operator_image=config.image), len(scopes))
    try:
        loop.run_until_complete(_serve(config, tls, app, stopping))
    finally:
        loop.close()
