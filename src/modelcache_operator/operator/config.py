"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    image: str
    resync_seconds: float
    metrics_port: int
    webhook_port: int
    webhook_metrics_port: int
    webhook_host: str
    webhook_cert: str | None
    webhook_key: str | None
    # Only development clusters let kopf manage the webhook configurations; the chart renders its own.
    webhook_managed_name: str | None
    namespaces: tuple[str, ...]
    # Where shared downloads, the stores' writable claims and the hub credential Secrets live.
    operator_namespace: str
    # hostPath stores reach the node's filesystem: development clusters only (chart value stores.allowHostPath).
    allow_host_path: bool
    # The chart's image.pullPolicy and imagePullSecrets (Secrets in operator_namespace).
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    # Leader election (operator/lease.py): the Lease in operator_namespace, and client-go's three timings.
    lease_name: str = "modelcache-operator"
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0
    # After SIGTERM the webhook keeps answering this long, failing readiness, while the Service drops it.
    shutdown_delay_seconds: float = 0.0
    # How often a published download of a branch or tag checks whether upstream moved (0: never).
    upstream_check_seconds: float = 21600.0

    @classmethod
    def from_env(cls) -> OperatorConfig:
        env = os.environ
        return cls(
            image=env.get("MODELCACHE_IMAGE", "ghcr.io/modelcache-dev/modelcache-operator:0.1.0"),
            resync_seconds=float(env.get("MODELCACHE_RESYNC_SECONDS", "30")),
            metrics_port=int(env.get("MODELCACHE_METRICS_PORT", "9090")),
            webhook_port=int(env.get("MODELCACHE_WEBHOOK_PORT", "9443")),
            webhook_metrics_port=int(env.get("MODELCACHE_WEBHOOK_METRICS_PORT", "9091")),
            webhook_host=env.get("MODELCACHE_WEBHOOK_HOST", "0.0.0.0"),  # noqa: S104 - in-cluster Service target
            webhook_cert=env.get("MODELCACHE_WEBHOOK_CERT"),
            webhook_key=env.get("MODELCACHE_WEBHOOK_KEY"),
            webhook_managed_name=env.get("MODELCACHE_WEBHOOK_MANAGED") or None,
            namespaces=tuple(n for n in env.get("MODELCACHE_NAMESPACES", "").split(",") if n),
            operator_namespace=env.get("MODELCACHE_NAMESPACE", "modelcache-system"),
            allow_host_path=env.get("MODELCACHE_ALLOW_HOST_PATH", "false").lower() == "true",
            image_pull_policy=env.get("MODELCACHE_IMAGE_PULL_POLICY", "IfNotPresent"),
            image_pull_secrets=tuple(n for n in env.get("MODELCACHE_IMAGE_PULL_SECRETS", "").split(",") if n),
            lease_name=env.get("MODELCACHE_LEASE_NAME") or "modelcache-operator",
            lease_duration_seconds=float(env.get("MODELCACHE_LEASE_DURATION_SECONDS", "15")),
            renew_deadline_seconds=float(env.get("MODELCACHE_LEASE_RENEW_DEADLINE_SECONDS", "10")),
            retry_period_seconds=float(env.get("MODELCACHE_LEASE_RETRY_PERIOD_SECONDS", "2")),
            shutdown_delay_seconds=float(env.get("MODELCACHE_SHUTDOWN_DELAY_SECONDS", "0")),
            upstream_check_seconds=float(env.get("MODELCACHE_UPSTREAM_CHECK_SECONDS", "21600")),
        )
