"""ModelStore: a cluster admin's storage for model caches. Re-exported by `v1alpha2`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

from .common import (
    ABSOLUTE_PATH_PATTERN,
    DNS_LABEL_PATTERN,
    ENDPOINT_PATTERN,
    NO_DOTDOT_RULE,
    SECRET_KEY_PATTERN,
    ApiModel,
    Condition,
    cel,
)
from .job_options import DownloadJobOptions


class StoreSecretRef(ApiModel):
    name: str = Field(description="Name of a Secret in the operator's namespace.", pattern=DNS_LABEL_PATTERN,
                      max_length=253)
    key: str = Field(default="token", description="Key inside the Secret.", pattern=SECRET_KEY_PATTERN,
                     max_length=253)


class Ossfs2Backend(ApiModel):
    """Alibaba Cloud OSS through the ossfs 2.0 CSI driver (seed 001), as static PVs."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.authType != 'rrsa' || has(self.roleName)",
            "roleName is required when authType is rrsa", fieldPath=".roleName"),
        cel("self.authType != 'secret' || has(self.secretRef)",
            "secretRef is required when authType is secret", fieldPath=".secretRef"),
    ]})

    bucket: str = Field(description="OSS bucket name.", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
    path: str = Field(default="/", description="Root directory inside the bucket under which the store keeps "
                                               "its models, for example /models.",
                      pattern=ABSOLUTE_PATH_PATTERN, max_length=512,
                      json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})
    url: str = Field(description="OSS endpoint of the bucket's region, for example "
                                 "http://oss-cn-hangzhou-internal.aliyuncs.com.", pattern=ENDPOINT_PATTERN,
                     max_length=512)
    authType: Literal["rrsa", "secret"] = Field(
        default="rrsa", description="rrsa: a RAM role through RRSA (recommended). secret: an AccessKey Secret "
                                    "in the operator's namespace, passed to the CSI driver as "
                                    "nodePublishSecretRef.")
    roleName: str | None = Field(default=None, description="RAM role for RRSA.", max_length=64)
    secretRef: StoreSecretRef | None = Field(
        default=None, description="Secret in the operator's namespace with akId/akSecret keys (authType "
                                  "secret); its key field is ignored.")
    otherOpts: str | None = Field(
        default=None, max_length=1024, pattern=r"^[^;&|`$\n]*$",
        description="Extra ossfs 2.0 mount options, for example '-o memory_data_cache_size=16g'. They always win "
                    "over the options the operator derives for served volumes.")
    memoryDataCacheSize: str | None = Field(
        default=None, max_length=16, pattern=r"^[1-9][0-9]*[kKmMgG]?$",
        description="memory_data_cache_size given to the served volumes of caches with "
                    "spec.serving.tensorParallelSize > 1, so tensor-parallel ranks on a node share one in-memory "
                    "copy (ossfs 2.0 syntax, e.g. 16g). Unset: not derived.")


class NfsBackend(ApiModel):
    server: str = Field(description="NFS server host name or IP.", pattern=r"^[A-Za-z0-9.:\[\]-]+$",
                        max_length=253)
    path: str = Field(description="Exported root directory under which the store keeps its models.",
                      pattern=ABSOLUTE_PATH_PATTERN, max_length=512,
                      json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})
    mountOptions: list[str] | None = Field(default=None, description="NFS mount options, e.g. nfsvers=4.1.",
                                           max_length=32)


class EfsBackend(ApiModel):
    fileSystemId: str = Field(description="EFS file system id.", pattern=r"^fs-[0-9a-f]{8,40}$")
    accessPointId: str | None = Field(default=None, description="Optional EFS access point id.",
                                      pattern=r"^fsap-[0-9a-f]{8,40}$")
    path: str = Field(default="/", description="Root directory of the file system for the store.",
                      pattern=ABSOLUTE_PATH_PATTERN, max_length=512,
                      json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})


class StorageClassBackend(ApiModel):
    name: str = Field(description="A StorageClass that provisions ReadWriteMany volumes. A dynamically "
                                  "provisioned volume cannot be shared across namespaces safely, so each "
                                  "namespace gets its own claim and downloads its own copy.",
                      pattern=DNS_LABEL_PATTERN.replace("]*", ".]*"), max_length=253)


class HostPathBackend(ApiModel):
    """A directory on the node. Single-node development clusters only, and only when the chart allows it."""

    path: str = Field(description="Absolute directory on the node.", pattern=ABSOLUTE_PATH_PATTERN,
                      max_length=512, json_schema_extra={"x-kubernetes-validations": [NO_DOTDOT_RULE]})


STORAGE_BACKENDS = ("ossfs2", "nfs", "efs", "storageClass", "hostPath")


class LabelSelectorRequirement(ApiModel):
    key: str = Field(max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(default=None, max_length=64)


class LabelSelector(ApiModel):
    matchLabels: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None, max_length=32)
    matchExpressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=16)


class Retention(ApiModel):
    policy: Literal["Retain", "Delete"] = Field(
        default="Retain", description="Retain never deletes a file. Delete removes revision folders that no "
                                      "ModelCache wants and no pod uses, after ttlSecondsAfterUnused, or "
                                      "least recently used first when a download would exceed the quota.")
    ttlSecondsAfterUnused: int = Field(default=86400, ge=0, le=31536000,
                                       description="How long an unused revision folder is kept.")
    keepRevisions: int = Field(default=1, ge=0, le=100,
                               description="Newest unused revisions per model kept past the TTL (not "
                                           "against the quota).")


class HubCredentials(ApiModel):
    huggingface: StoreSecretRef | None = Field(default=None, description="Token for shared Hugging Face "
                                                                         "downloads.")
    modelscope: StoreSecretRef | None = Field(default=None, description="Token for shared ModelScope "
                                                                        "downloads.")


POSITIVE_QUANTITY: JsonDict = {"x-kubernetes-validations": [
    cel("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))", "must be a positive quantity such "
                                                                            "as 500Gi")]}


class CompileCache(ApiModel):
    """The engines' compile caches (vLLM, torch.compile/Inductor, Triton, SGLang's JIT kernels), shared by a
    namespace's serving pods per (GPU product or family, engine, engine version) under <root>/compile/."""

    enabled: bool = Field(default=False, description="Give serving pods of this store's caches a writable "
                                                     "compile-cache folder keyed by their GPU product.")
    sizeLimit: str = Field(default="50Gi", max_length=32, json_schema_extra=POSITIVE_QUANTITY,
                           description="Most bytes of one namespace's compile caches on this store; least "
                                       "recently used folders are evicted when a serving pod starts.")


def _backend_unchanged(backend: str) -> str:
    return f"has(self.{backend}) == has(oldSelf.{backend}) && (!has(self.{backend}) || " \
           f"self.{backend} == oldSelf.{backend})"


class ModelStoreSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("[" + ", ".join(f"has(self.{b})" for b in STORAGE_BACKENDS) + "].filter(x, x).size() == 1",
            "exactly one backend must be set: " + ", ".join(f"spec.{b}" for b in STORAGE_BACKENDS)),
        cel(" && ".join(_backend_unchanged(b) for b in STORAGE_BACKENDS),
            "the backend is immutable; create a new ModelStore for new storage"),
        cel("!has(self.compileCache) || !self.compileCache.enabled || !has(self.storageClass)",
            "spec.compileCache needs a static backend (ossfs2, nfs, efs or hostPath), not storageClass",
            fieldPath=".compileCache"),
    ]})

    ossfs2: Ossfs2Backend | None = Field(default=None, description="Alibaba Cloud OSS via ossfs 2.0.")
    nfs: NfsBackend | None = Field(default=None, description="An NFS export.")
    efs: EfsBackend | None = Field(default=None, description="AWS EFS via efs.csi.aws.com.")
    storageClass: StorageClassBackend | None = Field(
        default=None, description="A ReadWriteMany StorageClass: one claim per namespace, never shared.")
    hostPath: HostPathBackend | None = Field(default=None, description="A node directory (development only).")
    namespaceSelector: LabelSelector = Field(
        description="Namespaces whose ModelCaches may use this store; {} allows every namespace.")
    default: bool = Field(default=False, description="ModelCaches without spec.store use the default store. "
                                                     "Mark at most one.")
    capacity: str = Field(default="1Ti", max_length=32, json_schema_extra=POSITIVE_QUANTITY,
                          description="Capacity the store's PersistentVolumes advertise.")
    quota: str | None = Field(default=None, max_length=32, json_schema_extra=POSITIVE_QUANTITY,
                              description="Most bytes of revision folders the store may hold; unlimited when "
                                          "unset.")
    retention: Retention = Field(default_factory=Retention, description="When revision folders are removed.")
    hubCredentials: HubCredentials | None = Field(
        default=None, description="Tokens for shared downloads. Caches that bring their own token get a folder "
                                  "private to their namespace instead.")
    compileCache: CompileCache = Field(default_factory=CompileCache,
                                       description="Writable compile-cache folders for serving pods.")
    downloadJob: DownloadJobOptions | None = Field(
        default=None, description="Proxies, a CA bundle, pull secrets and placement for this store's download "
                                  "and cleanup Jobs.")


class ModelStoreStatus(ApiModel):
    phase: Literal["Ready", "Pending", "Invalid"] | None = None
    observedGeneration: int | None = None
    conditions: list[Condition] | None = None
    backend: str | None = None
    usedBytes: int | None = None
    used: str | None = Field(default=None, description="Human-readable, for printer columns.")
    revisionCount: int | None = Field(default=None, description="Published revision folders.")
