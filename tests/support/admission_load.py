"""Clients that keep admission busy while replicas come and go, and count every failure: labelled pods that
must come back injected, and ModelCaches created and then updated in the spec (so the validating webhook
sees both operations; metadata-only updates skip it)."""

from __future__ import annotations

import threading
from typing import Any, Self

from kubernetes.client.exceptions import ApiException

from modelcache_operator.api import v1alpha2 as api
from modelcache_operator.api.names import LABEL_INJECT
from tests.support.kube import Cluster


class Load(threading.Thread):
    """Runs `step(i)` every `interval` until stopped; `done` counts the steps that succeeded."""

    def __init__(self, interval: float, limit: int | None = None):
        super().__init__(daemon=True)
        self.interval, self.limit = interval, limit
        self.done = 0
        self.failures: list[str] = []
        self.stopped = threading.Event()

    def step(self, i: int) -> None:
        raise NotImplementedError

    def run(self) -> None:
        i = 0
        while not self.stopped.is_set() and (self.limit is None or i < self.limit):
            try:
                self.step(i)
                self.done += 1
            except ApiException as error:
                self.failures.append(f"#{i} ({type(self).__name__}): {error.status} {error.reason}: {error.body}")
            except AssertionError as error:
                self.failures.append(f"#{i}: {error}")
            i += 1
            self.stopped.wait(self.interval)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(60)


class InjectedPods(Load):
    """Creates `count` labelled pods for `cache` (then stops by itself); each must come back injected."""

    def __init__(self, k8s: Cluster, namespace: str, cache: str, count: int, interval: float = 0.05,
                 prefix: str = "load"):
        super().__init__(interval, limit=count)
        self.k8s, self.namespace, self.cache, self.prefix = k8s, namespace, cache, prefix

    def step(self, i: int) -> None:
        pod = self.k8s.core.create_namespaced_pod(self.namespace, {
            "metadata": {"name": f"{self.prefix}-{i:04d}", "labels": {LABEL_INJECT: "true"},
                         "annotations": {"modelcache.dev/caches": self.cache}},
            "spec": {"containers": [{"name": "vllm", "image": "vllm"}]}})
        annotations = pod.metadata.annotations or {}
        assert annotations.get("modelcache.dev/injected") == "true", f"{pod.metadata.name} not injected"

    def wait_finished(self, timeout: float) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"{self.done} of {self.limit} pods created in {timeout}s"


class CacheChurn(Load):
    """Creates ModelCache churn-N on `store`, then changes its spec (allowPatterns), until stopped."""

    def __init__(self, k8s: Cluster, namespace: str, store: str, interval: float = 0.2):
        super().__init__(interval)
        self.k8s, self.namespace, self.store = k8s, namespace, store

    def step(self, i: int) -> None:
        name = f"churn-{i:04d}"
        manifest: dict[str, Any] = {
            "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
            "spec": {"store": self.store, "source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}}}
        self.k8s.create_cache(self.namespace, manifest)
        self.k8s.patch_cache(self.namespace, name, {"spec": {"source": {"huggingface": {
            "allowPatterns": ["*.json", f"shard-{i}.safetensors"]}}}})
