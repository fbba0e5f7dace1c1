"""Kubernetes resource quantities ("800Gi", "1.5G", "129e6") as bytes. Pure."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_QUANTITY_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$")
_SUFFIXES: dict[str, Decimal] = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
}


def parse_quantity(value: object) -> int | None:
    """Bytes in a Kubernetes quantity, rounded up; None when unparsable."""
    match = _QUANTITY_RE.match(str(value).strip())
    if not match:
        return None
    number, exponent, suffix = match.groups()
    try:
        amount = Decimal(number) * (Decimal(f"1{exponent}") if exponent else _SUFFIXES.get(suffix or "", 1))
    except InvalidOperation:
        return None
    return int(amount.to_integral_value(rounding=ROUND_CEILING))
