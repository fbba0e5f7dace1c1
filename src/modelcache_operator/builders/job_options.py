"""A store's downloadJob options (api/job_options.py) applied to a download or cleanup Job built by `jobs`."""

from __future__ import annotations

import copy
from typing import Any

from ..api import v1alpha2 as api

CA_BUNDLE_DIR = "/etc/modelcache/ca"
CA_BUNDLE_FILE = f"{CA_BUNDLE_DIR}/ca.crt"
CA_VOLUME = "ca-bundle"
# Each TLS stack in the downloader reads its own variable: Python's ssl (urllib, httpx) SSL_CERT_FILE; `requests`
# (the modelscope client) only REQUESTS_CA_BUNDLE, else certifi's bundle. Both name the file: given a directory,
# requests hands it to OpenSSL as a CApath, which finds certificates by hashed names a ConfigMap mount lacks.
CA_BUNDLE_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def ca_bundle_env(path: str = CA_BUNDLE_FILE) -> dict[str, str]:
    """The env that makes every client in the downloader trust the PEM bundle at `path`."""
    return dict.fromkeys(CA_BUNDLE_ENV, path)


def with_image_settings(job: dict[str, Any], pull_policy: str, pull_secrets: tuple[str, ...]) -> dict[str, Any]:
    """The chart's image settings: its pull policy on every container, and its pull Secrets, which exist in
    the operator's namespace only, on the Jobs that run there (a store's own pull Secrets come on top)."""
    job = copy.deepcopy(job)
    pod = job["spec"]["template"]["spec"]
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        container["imagePullPolicy"] = pull_policy
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in pull_secrets]
    return job


def with_store_options(job: dict[str, Any], options: api.DownloadJobOptions | None) -> dict[str, Any]:
    """The Job with the store's options; the operator's own labels, env and volumes always win."""
    if options is None:
        return job
    job = copy.deepcopy(job)
    template = job["spec"]["template"]
    pod = template["spec"]
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {**(options.labels or {}), **metadata.get("labels", {})}
    if options.annotations:
        metadata["annotations"] = {**options.annotations, **metadata.get("annotations", {})}
    if options.imagePullSecrets:
        chart = [s for s in pod.get("imagePullSecrets", []) if s["name"] not in options.imagePullSecrets]
        pod["imagePullSecrets"] = [*chart, *({"name": name} for name in options.imagePullSecrets)]
    if options.priorityClassName:
        pod["priorityClassName"] = options.priorityClassName
    if options.affinity:
        pod["affinity"] = options.affinity
    extra_env = [{"name": e.name, "value": e.value} for e in options.env or []]
    if options.caBundle:
        pod["volumes"].append({"name": CA_VOLUME, "configMap": {
            "name": options.caBundle.name, "items": [{"key": options.caBundle.key, "path": "ca.crt"}]}})
        extra_env += [{"name": name, "value": value} for name, value in ca_bundle_env().items()]
    for container in pod["containers"]:
        ours = {e["name"] for e in container.get("env") or []}
        container["env"] = [*(container.get("env") or []), *(e for e in extra_env if e["name"] not in ours)]
        if options.caBundle:
            container["volumeMounts"] = [*(container.get("volumeMounts") or []),
                                         {"name": CA_VOLUME, "mountPath": CA_BUNDLE_DIR, "readOnly": True}]
    return job
