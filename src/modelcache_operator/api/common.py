"""What every kind of the API shares: the strict base model, CEL helpers, patterns and conditions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.config import JsonDict

# Hub repo ids: "owner/name", letters, digits, "-", "_", ".", no "..", no leading/trailing punctuation.
REPO_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"
REVISION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,254}$"
ENDPOINT_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a key-name pattern, not a secret
ABSOLUTE_PATH_PATTERN = r"^/[^\x00]*$"
NO_DOTDOT_RULE: JsonDict = {
    "rule": "!self.split('/').exists(s, s == '..')",
    "message": "must not contain '..' path segments",
}


def cel(rule: str, message: str, **extra: str) -> JsonDict:
    return {"rule": rule, "message": message, **extra}


class ApiModel(BaseModel):
    """Strict base: unknown fields are errors in Python, and the CRD schema mirrors the model exactly."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Condition(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    lastTransitionTime: str
    observedGeneration: int | None = None
