"""Which of two caches that share storage may use it: a pure function of the caches the operator knows.

The validating webhook refuses a second cache on the same (or nested) location, but one can still slip
through: created while the webhook configuration was missing, or in the moment before the webhook's index
saw the first one. The earlier cache (by creationTimestamp, then namespace/name) keeps the storage; the later
one gets no children until the earlier one is gone, so two download Jobs never write one location.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..webhook.validate import validate_modelcache


@dataclass(frozen=True)
class StorageClaim:
    namespace: str
    name: str
    created: str  # RFC 3339 in UTC, as the apiserver writes it, so it orders as text
    spec: Mapping[str, Any]

    @property
    def order(self) -> tuple[str, str, str]:
        return self.created, self.namespace, self.name


def claim_of(body: Mapping[str, Any]) -> StorageClaim:
    meta = body["metadata"]
    return StorageClaim(meta["namespace"], meta["name"], str(meta.get("creationTimestamp") or ""),
                        body.get("spec") or {})


def storage_conflict(mine: StorageClaim, others: Iterable[StorageClaim]) -> str | None:
    """A message naming the earlier cache(s) whose storage `mine` overlaps, or None when it may proceed."""
    earlier = [(o.namespace, o.name, o.spec) for o in others
               if o.order < mine.order and (o.namespace, o.name) != (mine.namespace, mine.name)]
    errors, _ = validate_modelcache(mine.spec, mine.namespace, earlier, name=mine.name)
    if not errors:
        return None
    return "; ".join(errors) + ". This cache waits until that one is deleted"
