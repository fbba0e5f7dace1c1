"""What every kind of the API shares: the strict base model, CEL helpers, patterns and conditions."""

from __future__ import annotations

from typing import Any, Literal, Self

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
    """Strict where our code writes: an unknown field is an error when a model is built, and the CRD schema
    mirrors the model exactly (the apiserver prunes or, with strict field validation, refuses the rest)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @classmethod
    def from_api(cls, data: Any) -> Self:
        """Reads back what the apiserver already validated (specs, status, the downloader's report). Its CRD
        may be newer than this code (GitOps applies CRDs first; an image rollback), so fields this version
        does not know are ignored instead of failing the reconcile or the admission."""
        return cls.model_validate(data, extra="ignore")


class Condition(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    lastTransitionTime: str
    observedGeneration: int | None = None
