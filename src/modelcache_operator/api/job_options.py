"""ModelStore.spec.downloadJob: how the store's download and cleanup Jobs reach the network and the registry.

These belong to the admin's store, not to a team's cache: a proxy, a trusted CA or a pull secret decides
where every namespace's shared download sends its token, so a namespace user must not be able to set them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from .common import SECRET_KEY_PATTERN, ApiModel, cel

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ObjectName = Annotated[str, StringConstraints(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=63)]


class EnvVar(ApiModel):
    name: str = Field(max_length=128, pattern=ENV_NAME_PATTERN, json_schema_extra={"x-kubernetes-validations": [
        cel("!self.startsWith('MC_') && !(self in ['SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE'])",
            "MC_*, SSL_CERT_FILE and REQUESTS_CA_BUNDLE are set by the operator (use caBundle for a CA)")]})
    value: str = Field(max_length=4096)


class ConfigMapKeyRef(ApiModel):
    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    key: str = Field(default="ca.crt", max_length=253, pattern=SECRET_KEY_PATTERN)


class DownloadJobOptions(ApiModel):
    env: list[EnvVar] | None = Field(default=None, max_length=32, description=(
        "Plain env for the downloader, e.g. HTTPS_PROXY, HTTP_PROXY, NO_PROXY (values, never Secrets)."))
    caBundle: ConfigMapKeyRef | None = Field(default=None, description=(
        "A ConfigMap key with PEM certificates the downloader trusts instead of the image's: a mirror or "
        "proxy signed by a private CA (mounted as a file named by SSL_CERT_FILE and REQUESTS_CA_BUNDLE, so "
        "both hubs' clients use it). Include public roots if public hubs are used too. The ConfigMap must "
        "be in the download's namespace (the operator's for shared downloads, the cache's for private ones)."))
    imagePullSecrets: list[ObjectName] | None = Field(default=None, max_length=8, description=(
        "Secrets (in the download's namespace) to pull the operator image from a private registry."))
    priorityClassName: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    affinity: dict[str, Any] | None = Field(default=None, description="A core/v1 Affinity for the Jobs' pods.")
    labels: dict[str, LabelValue] | None = Field(default=None, max_length=32, description=(
        "Extra pod labels; the operator's own labels win."))
    annotations: dict[str, str] | None = Field(default=None, max_length=32, description="Extra pod annotations.")



