"""The ModelCache API, v1alpha1. These models are the single source of the CRD schema (see `crd.py`)."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

GROUP = "modelcache.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "modelcache.dev/v1alpha1"
KIND: Final = "ModelCache"
PLURAL = "modelcaches"
SINGULAR = "modelcache"
SHORT_NAMES = ["mc"]

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


class SecretKeyRef(ApiModel):
    name: str = Field(description="Name of a Secret in the ModelCache's namespace.", pattern=DNS_LABEL_PATTERN,
                      max_length=253)
    key: str = Field(default="token", description="Key inside the Secret.", pattern=SECRET_KEY_PATTERN,
                     max_length=253)


class HubSourceFields(ApiModel):
    allowPatterns: list[str] | None = Field(
        default=None, description="Glob patterns of files to download (fnmatch); all files when unset.",
        max_length=64)
    ignorePatterns: list[str] | None = Field(
        default=None, description="Glob patterns of files to skip, applied after allowPatterns.", max_length=64)
    endpoint: str | None = Field(
        default=None, pattern=ENDPOINT_PATTERN, max_length=512,
        description="Mirror or self-hosted hub base URL, for example https://hf-mirror.com. "
                    "The public hub when unset.")
    tokenSecretRef: SecretKeyRef | None = Field(
        default=None, description="Secret holding the hub access token. Passed to the download Job only "
                                  "through secretKeyRef, never as a literal.")


class HuggingFaceSource(HubSourceFields):
    repo: str = Field(description="Hugging Face model repo id, owner/name.", pattern=REPO_ID_PATTERN,
                      max_length=193)
    revision: str = Field(default="main", pattern=REVISION_PATTERN, max_length=255,
                          description="Branch, tag or commit sha. Resolved to a commit sha in status.")


class ModelScopeSource(HubSourceFields):
    model: str = Field(description="ModelScope model id, owner/name.", pattern=REPO_ID_PATTERN, max_length=193)
    revision: str = Field(default="master", pattern=REVISION_PATTERN, max_length=255,
                          description="Branch, tag or commit id. Resolved to a commit id in status.")


class Source(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [cel(
        "[has(self.huggingface), has(self.modelscope)].filter(x, x).size() == 1",
        "exactly one of spec.source.huggingface or spec.source.modelscope must be set")]})

    huggingface: HuggingFaceSource | None = Field(default=None, description="Download from a Hugging Face hub.")
    modelscope: ModelScopeSource | None = Field(default=None, description="Download from a ModelScope hub.")


class Ossfs2Storage(ApiModel):
    """Alibaba Cloud OSS through the ossfs 2.0 CSI driver, as a static PV."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.authType != 'rrsa' || has(self.roleName)",
            "roleName is required when authType is rrsa", fieldPath=".roleName"),
        cel("self.authType != 'secret' || has(self.secretRef)",
            "secretRef is required when authType is secret", fieldPath=".secretRef"),
    ]})

    bucket: str = Field(description="OSS bucket name.", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
    path: str = Field(description="Directory inside the bucket that holds this cache, for example "
                                  "/models/DeepSeek-R1-0528.", pattern=ABSOLUTE_PATH_PATTERN, max_length=1024,
                      json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})
    url: str = Field(description="OSS endpoint of the bucket's region, for example "
                                 "http://oss-cn-hangzhou-internal.aliyuncs.com.", pattern=ENDPOINT_PATTERN,
                     max_length=512)
    authType: Literal["rrsa", "secret"] = Field(
        default="rrsa", description="rrsa: a RAM role through RRSA (recommended). secret: an AccessKey Secret "
                                    "passed to the CSI driver as nodePublishSecretRef.")
    roleName: str | None = Field(default=None, description="RAM role for RRSA.", max_length=64)
    secretRef: SecretKeyRef | None = Field(
        default=None, description="Secret with akId/akSecret keys (authType secret); its key field is ignored.")
    otherOpts: str | None = Field(
        default=None, max_length=1024, pattern=r"^[^;&|`$\n]*$",
        description="Extra ossfs 2.0 mount options, for example '-o memory_data_cache_size=16g'.")


class NfsStorage(ApiModel):
    server: str = Field(description="NFS server host name or IP.", pattern=r"^[A-Za-z0-9.:\[\]-]+$",
                        max_length=253)
    path: str = Field(description="Exported path.", pattern=ABSOLUTE_PATH_PATTERN, max_length=1024,
                      json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})
    mountOptions: list[str] | None = Field(default=None, description="NFS mount options, e.g. nfsvers=4.1.")


class EfsStorage(ApiModel):
    fileSystemId: str = Field(description="EFS file system id.", pattern=r"^fs-[0-9a-f]{8,40}$")
    accessPointId: str | None = Field(default=None, description="Optional EFS access point id.",
                                      pattern=r"^fsap-[0-9a-f]{8,40}$")
    path: str | None = Field(default=None, description="Subdirectory of the file system.",
                             pattern=ABSOLUTE_PATH_PATTERN, max_length=1024,
                             json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})


class StorageClassStorage(ApiModel):
    name: str = Field(description="A StorageClass that provisions ReadWriteMany volumes.",
                      pattern=DNS_LABEL_PATTERN.replace("]*", ".]*"), max_length=253)


class HostPathStorage(ApiModel):
    """A directory on the node. For single-node development clusters only."""

    path: str = Field(description="Absolute directory on the node.", pattern=ABSOLUTE_PATH_PATTERN,
                      max_length=1024, json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})


STORAGE_BACKENDS = ("ossfs2", "nfs", "efs", "storageClass", "hostPath")


class Storage(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("[" + ", ".join(f"has(self.{b})" for b in STORAGE_BACKENDS) + "].filter(x, x).size() == 1",
            "exactly one storage backend must be set: " + ", ".join(f"spec.storage.{b}" for b in STORAGE_BACKENDS)),
    ]})

    ossfs2: Ossfs2Storage | None = Field(default=None, description="Alibaba Cloud OSS via ossfs 2.0 (static PV).")
    nfs: NfsStorage | None = Field(default=None, description="An NFS export (static PV).")
    efs: EfsStorage | None = Field(default=None, description="AWS EFS via efs.csi.aws.com (static PV).")
    storageClass: StorageClassStorage | None = Field(
        default=None, description="A dynamically provisioned ReadWriteMany PVC.")
    hostPath: HostPathStorage | None = Field(default=None, description="A node directory (development only).")
    capacity: str = Field(
        default="100Gi", description="Volume capacity, a Kubernetes quantity such as 80Gi.", max_length=32,
        json_schema_extra={"x-kubernetes-validations": [
            cel("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
                "must be a positive quantity such as 80Gi")]})
    reclaimPolicy: Literal["Retain", "Delete"] = Field(
        default="Retain", description="Retain keeps the files when the ModelCache is deleted; Delete runs a "
                                      "cleanup Job that removes them first.")


class Toleration(ApiModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None


QUANTITY_MAP_RULE = cel("self.all(k, isQuantity(self[k]))", "values must be quantities such as 500m or 2Gi")
NO_GPU_RULE = cel("!self.exists(k, k.endsWith('gpu'))", "the download Job never requests GPUs")
RESOURCE_MAP_RULES: JsonDict = {"x-kubernetes-validations": [QUANTITY_MAP_RULE, NO_GPU_RULE]}


# Bounded sizes keep the CEL cost estimate of the rules above inside the apiserver's budget.
Quantity = Annotated[str, StringConstraints(max_length=64)]


class ResourceRequirements(ApiModel):
    requests: dict[str, Quantity] | None = Field(default=None, description="Resource requests (quantities).",
                                                 max_length=16, json_schema_extra=RESOURCE_MAP_RULES)
    limits: dict[str, Quantity] | None = Field(default=None, description="Resource limits (quantities).",
                                               max_length=16, json_schema_extra=RESOURCE_MAP_RULES)


class Download(ApiModel):
    image: str | None = Field(default=None, max_length=512,
                              description="Downloader image; the operator's own image when unset.")
    maxWorkers: int = Field(default=8, ge=1, le=64, description="Parallel file downloads.")
    backoffLimit: int = Field(default=4, ge=0, le=20, description="Job retries for retryable failures.")
    activeDeadlineSeconds: int = Field(default=21600, ge=60, le=604800, description="Job deadline.")
    resources: ResourceRequirements | None = Field(default=None, description="Downloader container resources.")
    nodeSelector: dict[str, str] | None = Field(default=None, description="Node selector for the download Job.")
    tolerations: list[Toleration] | None = Field(default=None, description="Tolerations for the download Job.")


class Prewarm(ApiModel):
    mode: Literal["postStart", "initContainer", "off"] = Field(
        default="postStart", description="postStart: warm the page cache in a postStart hook (never fails the "
                                         "container). initContainer: warm before the server starts. off: none.")
    concurrency: int = Field(default=8, ge=1, le=128, description="Parallel readers.")
    timeoutSeconds: int = Field(default=900, ge=1, le=86400, description="Upper bound on one prewarm run.")


class Serving(ApiModel):
    mountPath: str | None = Field(default=None, pattern=ABSOLUTE_PATH_PATTERN, max_length=512,
                                  description="Where injected pods see the model; /models/<name> when unset.",
                                  json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})
    notReadyPolicy: Literal["wait", "deny", "ignore"] = Field(
        default="wait", description="What admission does with a pod while the cache is not Ready: wait (an "
                                    "init container waits for the manifest), deny, or ignore (no injection).")


class ModelCacheSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("!has(oldSelf.storage) || self.storage == oldSelf.storage",
            "spec.storage is immutable; create a new ModelCache for new storage", fieldPath=".storage"),
    ]})

    source: Source = Field(description="Where the model comes from.")
    storage: Storage = Field(description="Where the model is kept. Immutable.")
    download: Download = Field(default_factory=Download, description="Download Job options.")
    prewarm: Prewarm = Field(default_factory=Prewarm, description="Page-cache prewarm in serving pods.")
    serving: Serving = Field(default_factory=Serving, description="How serving pods get the cache.")


# ----- status -----

class Condition(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    lastTransitionTime: str
    observedGeneration: int | None = None


class DownloadReport(ApiModel):
    """What the downloader writes to status.download. Only the downloader writes it; the operator reads it."""

    jobName: str = Field(description="The download Job this report comes from.")
    state: Literal["Resolving", "Downloading", "Verifying", "Published", "Failed"]
    requestedRevision: str | None = None
    resolvedRevision: str | None = None
    bytesDone: int = 0
    bytesTotal: int = 0
    filesDone: int = 0
    filesTotal: int = 0
    bytesPerSecond: int = 0
    reason: str | None = Field(default=None, description="Failure reason, e.g. Unauthorized, NotFound.")
    message: str | None = None
    format: str | None = None
    architecture: str | None = None
    dtype: str | None = None
    quantization: str | None = None
    updatedAt: str | None = None


class Progress(ApiModel):
    bytesDone: int = 0
    bytesTotal: int = 0
    filesDone: int = 0
    filesTotal: int = 0
    bytesPerSecond: int = 0
    percent: str = Field(default="", description="Human-readable, for printer columns.")


Phase = Literal["Pending", "Provisioning", "Downloading", "Verifying", "Ready", "Failed", "Deleting"]


class ModelCacheStatus(ApiModel):
    phase: Phase | None = None
    observedGeneration: int | None = None
    conditions: list[Condition] | None = None
    model: str | None = Field(default=None, description="hub:repo, for printer columns.")
    resolvedRevision: str | None = Field(default=None, description="The commit that serving pods are pinned to.")
    progress: Progress | None = None
    sizeBytes: int | None = None
    size: str | None = Field(default=None, description="Human-readable size, for printer columns.")
    fileCount: int | None = None
    format: str | None = None
    pvName: str | None = None
    pvcName: str | None = None
    jobName: str | None = None
    download: DownloadReport | None = None
