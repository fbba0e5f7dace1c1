"""The metrics a dashboard reads, scraped from the running operator's and webhook's /metrics while real
objects move: caches by phase, reconciles, download Job durations, and admissions by result."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelcache_devcluster.cluster import LocalCluster
from tests.integration.test_modelcache import (
    ON_FAILING_NODE,
    Stores,
    cache_manifest,
    download_and_job,
    reporter_for,
    stores,  # noqa: F401  (fixture)
)
from tests.integration.test_webhook import dry_run, serving_pod, settled
from tests.support.downloader_role import publish
from tests.support.kube import Cluster, wait_for
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def moved(scrape: Callable[[], str], before: Samples, name: str, by: float, **labels: str) -> None:
    """Waits until the series grew by at least `by` (other tests' objects may move it too)."""
    wait_for(lambda: value(samples(scrape()), name, **labels) - value(before, name, **labels) >= by, 30,
             describe=f"{name}{labels} to grow by {by}", diagnostics=scrape)


def test_operator_series_move(k8s: Cluster, namespace: str, operator: OperatorProcess,
                              local_cluster: LocalCluster, stores: Stores) -> None:  # noqa: F811
    before = samples(operator.metrics())
    store = stores.nfs(namespace)
    k8s.create_cache(namespace, cache_manifest("measured", store))
    download, job = download_and_job(k8s, namespace, "measured", operator)
    publish(reporter_for(k8s, local_cluster, download), job.metadata.name)
    k8s.wait_phase(namespace, "measured", "Ready", diagnostics=operator.log_tail)
    k8s.create_cache(namespace, cache_manifest("failing", stores.nfs(namespace), download=ON_FAILING_NODE))
    download_and_job(k8s, namespace, "failing", operator)
    k8s.wait_phase(namespace, "failing", "Failed", diagnostics=operator.log_tail)

    moved(operator.metrics, before, "modelcache_caches", 1, phase="Ready")
    moved(operator.metrics, before, "modelcache_caches", 1, phase="Failed")
    moved(operator.metrics, before, "modelcache_reconcile_total", 10, result="ok")
    moved(operator.metrics, before, "modelcache_reconcile_duration_seconds_count", 10)
    moved(operator.metrics, before, "modelcache_api_writes_total", 1, kind="Job")
    moved(operator.metrics, before, "modelcache_download_job_duration_seconds_count", 1, result="succeeded")
    moved(operator.metrics, before, "modelcache_download_job_duration_seconds_count", 1, result="failed")
    # The gauge counts caches, not transitions: a deleted cache leaves its phase.
    failed = value(samples(operator.metrics()), "modelcache_caches", phase="Failed")
    k8s.delete_cache(namespace, "failing")
    wait_for(lambda: value(samples(operator.metrics()), "modelcache_caches", phase="Failed") == failed - 1, 30,
             describe="modelcache_caches{phase=Failed} to drop by one", diagnostics=operator.metrics)


def test_webhook_admissions_by_result(k8s: Cluster, namespace: str, operator: OperatorProcess,
                                      local_cluster: LocalCluster, stores: Stores) -> None:  # noqa: F811
    before = samples(operator.webhook_metrics())
    store = stores.nfs(namespace)
    k8s.create_cache(namespace, cache_manifest("admitted", store))
    download, job = download_and_job(k8s, namespace, "admitted", operator)
    publish(reporter_for(k8s, local_cluster, download), job.metadata.name)
    k8s.wait_phase(namespace, "admitted", "Ready", diagnostics=operator.log_tail)
    settled(k8s, namespace, serving_pod("allowed", "admitted"))  # admitted once the webhook's view has it
    _, denied = dry_run(k8s, namespace, serving_pod("denied", "kube-system/someone-elses"))
    assert denied is not None and "another namespace" in denied
    moved(operator.webhook_metrics, before, "modelcache_webhook_duration_seconds_count", 1, result="allowed")
    moved(operator.webhook_metrics, before, "modelcache_webhook_duration_seconds_count", 1, result="denied")
    moved(operator.webhook_metrics, before, "modelcache_webhook_validate_duration_seconds_count", 1,
          result="allowed")
