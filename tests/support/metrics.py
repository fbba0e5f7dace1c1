"""Reading a Prometheus /metrics page in tests: samples by name and labels, and waiting for a series to move."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.support.kube import wait_for

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
