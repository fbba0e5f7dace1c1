"""The modelcache.dev API, v1alpha2: ModelStore (cluster-scoped, the admin's storage), ModelCache (namespaced,
a team's model) and ModelDownload (namespaced, the operator's record of one download into one store folder).

These models are the single source of the CRD schemas (see `crd.py`).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

from .common import (
    ABSOLUTE_PATH_PATTERN,
    DNS_LABEL_PATTERN,
    ENDPOINT_PATTERN,
    NO_DOTDOT_RULE,
    REPO_ID_PATTERN,
    REVISION_PATTERN,
    SECRET_KEY_PATTERN,
    ApiModel,
    Condition,
    cel,
)
from .job_options import ConfigMapKeyRef, DownloadJobOptions, EnvVar
from .names import API_VERSION, DOWNLOAD_PLURAL, GROUP, VERSION
from .store import (
    STORAGE_BACKENDS,
    CompileCache,
    EfsBackend,
    HostPathBackend,
    HubCredentials,
    LabelSelector,
    LabelSelectorRequirement,
    ModelStoreSpec,
    ModelStoreStatus,
    NfsBackend,
    Ossfs2Backend,
    Retention,
    StorageClassBackend,
    StoreSecretRef,
)

__all__ = [
    "ABSOLUTE_PATH_PATTERN",
    "API_VERSION",
    "DNS_LABEL_PATTERN",
    "DOWNLOAD_PLURAL",
    "ENDPOINT_PATTERN",
    "GROUP",
    "REPO_ID_PATTERN",
    "REVISION_PATTERN",
    "SECRET_KEY_PATTERN",
    "STORAGE_BACKENDS",
    "VERSION",
    "ApiModel",
    "CompileCache",
    "Condition",
    "ConfigMapKeyRef",
    "DownloadJobOptions",
    "EfsBackend",
    "EnvVar",
    "HostPathBackend",
    "HubCredentials",
    "LabelSelector",
    "LabelSelectorRequirement",
    "ModelStoreSpec",
    "ModelStoreStatus",
    "NfsBackend",
    "Ossfs2Backend",
    "Retention",
    "StorageClassBackend",
    "StoreSecretRef",
    "cel",
]

KIND: Final = "ModelCache"
PLURAL = "modelcaches"
SINGULAR = "modelcache"
SHORT_NAMES = ["mc"]
STORE_KIND: Final = "ModelStore"
STORE_PLURAL = "modelstores"
DOWNLOAD_KIND: Final = "ModelDownload"

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
        default=None, description="Secret holding the hub access token. A cache with its own token gets a "
                                  "folder private to its namespace, downloaded by a Job in that namespace. "
                                  "Passed to the Job only through secretKeyRef, never as a literal.")


class HuggingFaceSource(HubSourceFields):
    repo: str = Field(description="Hugging Face model repo id, owner/name.", pattern=REPO_ID_PATTERN,
                      max_length=193)
    revision: str = Field(default="main", pattern=REVISION_PATTERN, max_length=255,
                          description="Branch, tag or commit sha. Resolved to a commit sha in status.",
                          json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})


class ModelScopeSource(HubSourceFields):
    model: str = Field(description="ModelScope model id, owner/name.", pattern=REPO_ID_PATTERN, max_length=193)
    revision: str = Field(default="master", pattern=REVISION_PATTERN, max_length=255,
                          description="Branch, tag or commit id. Resolved to a commit id in status.",
                          json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})


class Source(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [cel(
        "[has(self.huggingface), has(self.modelscope)].filter(x, x).size() == 1",
        "exactly one of spec.source.huggingface or spec.source.modelscope must be set")]})

    huggingface: HuggingFaceSource | None = Field(default=None, description="Download from a Hugging Face hub.")
    modelscope: ModelScopeSource | None = Field(default=None, description="Download from a ModelScope hub.")


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
    """Options of the download Job. A shared download takes them from the cache that started it."""

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
    tensorParallelSize: int | None = Field(
        default=None, ge=1, le=512,
        description="Tensor-parallel ranks of the pods serving this cache. With an ossfs2 store and more than one, "
                    "the served volume gets -o memory_data_cache_size (where the store sets "
                    "ossfs2.memoryDataCacheSize). Immutable: a served volume's options cannot change.",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "spec.serving.tensorParallelSize is immutable"}]})
    notReadyPolicy: Literal["gate", "wait", "deny", "ignore"] = Field(
        default="gate", description="What admission does with a pod while the cache is not Ready: gate (the "
                                    "pod gets a scheduling gate per such cache, so it holds no node or GPU, "
                                    "and the operator removes it once that revision is published), wait (the "
                                    "pod is scheduled and an init container waits for the manifest), deny, "
                                    "or ignore (no injection).")


def _repo_of(obj: str) -> str:
    return f"(has({obj}.huggingface) ? 'hf:' + {obj}.huggingface.repo : 'ms:' + {obj}.modelscope.model)"


def _has_token(obj: str) -> str:
    return f"(has({obj}.huggingface) ? has({obj}.huggingface.tokenSecretRef) : " \
           f"has({obj}.modelscope.tokenSecretRef))"


class ModelCacheSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("!has(self.storage)", "spec.storage was removed in v1alpha2: storage belongs to a cluster admin's "
                                  "ModelStore; name one in spec.store, or leave it unset for the default store",
            fieldPath=".storage", reason="FieldValueForbidden"),
        cel("has(self.store) == has(oldSelf.store) && (!has(self.store) || self.store == oldSelf.store)",
            "spec.store is immutable; create a new ModelCache for another store", fieldPath=".store"),
        cel(f"{_repo_of('self.source')} == {_repo_of('oldSelf.source')}",
            "the hub and repo are immutable; create a new ModelCache for another model", fieldPath=".source"),
        cel(f"{_has_token('self.source')} == {_has_token('oldSelf.source')}",
            "adding or removing tokenSecretRef moves the cache between a shared and a namespace-private folder; "
            "create a new ModelCache instead", fieldPath=".source"),
    ]})

    source: Source = Field(description="Where the model comes from. The revision and file filters may change; "
                                       "pods keep the complete old revision until the new one is published.")
    store: str | None = Field(default=None, pattern=DNS_LABEL_PATTERN.replace("]*", ".]*"), max_length=253,
                              description="The ModelStore that keeps the files; the default store when unset. "
                                          "Immutable.")
    download: Download = Field(default_factory=Download, description="Download Job options.")
    prewarm: Prewarm = Field(default_factory=Prewarm, description="Page-cache prewarm in serving pods.")
    serving: Serving = Field(default_factory=Serving, description="How serving pods get the cache.")
    storage: dict[str, Any] | None = Field(default=None, description="Removed in v1alpha2; always refused.")


class ModelDownloadSpec(ApiModel):
    """Written by the operator only. One object per (store, source, filter) download, shared by every cache
    that asks for it; private downloads (a cache's own token, or a storageClass store) live in that
    cache's namespace."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self == oldSelf", "a ModelDownload's spec is immutable")]})

    store: str = Field(max_length=253)
    source: Source
    folder: str = Field(max_length=1024, description="The folder of this download's revisions, relative to "
                                                     "the claim root; each revision is <folder>/<commit>.",
                        json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})
    claimName: str = Field(max_length=253, description="The writable claim the download Job mounts.")
    download: Download = Field(default_factory=Download)
    requestedBy: str = Field(max_length=317, description="namespace/name of the cache that started it.")


# ----- status -----

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


class DownloadRef(ApiModel):
    namespace: str
    name: str
    shared: bool = Field(description="True when the folder is shared across namespaces.")
    requestedBy: str = Field(description="namespace/name of the cache whose request started the download.")


class CompileCacheStatus(ApiModel):
    pvcName: str = Field(description="This namespace's writable compile-cache claim on the store.")
    sizeLimit: str = Field(description="The store's spec.compileCache.sizeLimit.")
    rootOwned: bool = Field(default=False, description="A hostPath store: the kubelet creates the folder "
                                                       "root-owned, so the init container runs as uid 0 (no "
                                                       "capabilities) to create the pod's folder in it.")


class ModelCacheStatus(ApiModel):
    phase: Phase | None = None
    observedGeneration: int | None = None
    conditions: list[Condition] | None = None
    model: str | None = Field(default=None, description="hub:repo, for printer columns.")
    store: str | None = Field(default=None, description="The ModelStore in use (spec.store or the default).")
    resolvedRevision: str | None = Field(default=None, description="The commit that new serving pods get: "
                                                                   "the last one published.")
    revisionPath: str | None = Field(default=None, description="That revision's folder inside pvcName.")
    pendingRevisionPath: str | None = Field(default=None, description="Inside pvcName, the folder of the "
                                                                      "revision being downloaded.")
    progress: Progress | None = None
    sizeBytes: int | None = None
    size: str | None = Field(default=None, description="Human-readable size, for printer columns.")
    fileCount: int | None = None
    format: str | None = None
    pvName: str | None = None
    pvcName: str | None = None
    downloadRef: DownloadRef | None = None
    servedFrom: DownloadRef | None = Field(default=None, description="The download that published "
                                                                     "resolvedRevision.")
    download: DownloadReport | None = Field(default=None, description="The current download's report, as "
                                                                      "its ModelDownload has it.")
    compileCache: CompileCacheStatus | None = Field(
        default=None, description="Set when the store gives serving pods a compile cache.")


class CleanupFailure(ApiModel):
    """A cleanup Job that failed: kept after the Job is gone, so the operator does not run it again."""

    jobUid: str
    retry: str = Field(default="", description="The modelcache.dev/retry annotation it ran under; a new value "
                                               "runs a new cleanup Job.")
    message: str = ""


class UpstreamCheck(ApiModel):
    """What a periodic upstream check saw: the commit the requested branch or tag points at now. Written by the
    check Job's downloader only; the pinned `resolvedRevision` never follows it."""

    revision: str = Field(description="The commit the requested revision pointed at when checked.")
    checkedAt: str = Field(description="When it was checked (RFC 3339).")
    jobName: str | None = Field(default=None, description="The check Job that saw it.")


class ModelDownloadStatus(ApiModel):
    phase: Phase | None = None
    observedGeneration: int | None = None
    conditions: list[Condition] | None = None
    jobName: str | None = None
    resolvedRevision: str | None = Field(default=None, description="The commit the requested revision resolved "
                                                                   "to, pinned once: every later Job of this "
                                                                   "download fetches this commit.")
    sizeBytes: int | None = None
    download: DownloadReport | None = Field(default=None, description="Written by the downloader only.")
    upstream: UpstreamCheck | None = Field(default=None, description="The last upstream check of a branch or "
                                                                     "tag; written by the check Job only.")
    unusedSince: str | None = Field(default=None, description="Since when no cache wants and no pod uses it.")
    cleanupFailed: CleanupFailure | None = None
