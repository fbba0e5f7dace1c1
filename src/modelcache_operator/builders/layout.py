"""The content-addressed layout of a store, and which claim sees which folder. Pure.

A store keeps one folder per (hub, repo, file filter), and in it one folder per commit:

    <root>/hf/<owner>/<repo>/<filter>/<commit>/            shared by every namespace
    <root>/private/<namespace>/hf/<owner>/<repo>/<filter>/<commit>/   a cache with its own token

`<filter>` is `all`, or `f-<hash>` of the allow/ignore patterns, so another filter never shares a folder.
A commit folder is immutable once its manifest is published. A storageClass store has one volume per
namespace, laid out the same way from its root.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api import v1alpha2 as api
from . import naming

HUB_DIRS = {"huggingface": "hf", "modelscope": "ms"}
PRIVATE_DIR = "private"


@dataclass(frozen=True)
class SourceKey:
    hub: str
    repo: str
    revision: str
    fields: api.HubSourceFields

    @property
    def model_label(self) -> str:
        return f"{HUB_DIRS[self.hub]}:{self.repo}"


def source_key(source: api.Source) -> SourceKey:
    if source.huggingface:
        hf = source.huggingface
        return SourceKey("huggingface", hf.repo, hf.revision, hf)
    assert source.modelscope is not None  # guaranteed by the CRD's exactly-one rule
    return SourceKey("modelscope", source.modelscope.model, source.modelscope.revision, source.modelscope)


def filter_dir(fields: api.HubSourceFields) -> str:
    if not fields.allowPatterns and not fields.ignorePatterns:
        return "all"
    return "f-" + naming.short_hash(sorted(fields.allowPatterns or []), sorted(fields.ignorePatterns or []))


def is_private(cache: api.ModelCacheSpec, store: api.ModelStoreSpec) -> bool:
    """Downloads with the cache's own token, and every download of a storageClass store, stay in the
    cache's namespace."""
    return store.storageClass is not None or source_key(cache.source).fields.tokenSecretRef is not None


@dataclass(frozen=True)
class Placement:
    """Where one cache's files are, seen from each claim that mounts them."""

    model_dir: str  # the (hub, repo) folder, relative to the store root (or the namespace's volume)
    filter: str
    private: bool
    dynamic: bool  # a storageClass store: the claims are the namespace's one volume

    @property
    def serving_root(self) -> str:
        """Store-relative directory the cache's read-only PV points at (static stores)."""
        return self.model_dir

    def serving_path(self, commit: str) -> str:
        """A revision folder inside the cache's read-only claim: what serving pods mount as subPath."""
        inside = f"{self.filter}/{commit}"
        return f"{self.model_dir}/{inside}" if self.dynamic else inside

    @property
    def download_folder(self) -> str:
        """The download's folder inside the writable claim its Job mounts."""
        if self.private and not self.dynamic:
            return self.filter  # the private claim's root is the model folder
        return f"{self.model_dir}/{self.filter}"


def placement(cache: api.ModelCacheSpec, store: api.ModelStoreSpec, namespace: str) -> Placement:
    key = source_key(cache.source)
    model_dir = f"{HUB_DIRS[key.hub]}/{key.repo}"
    private = is_private(cache, store)
    dynamic = store.storageClass is not None
    if private and not dynamic:
        model_dir = f"{PRIVATE_DIR}/{namespace}/{model_dir}"
    return Placement(model_dir, filter_dir(key.fields), private, dynamic)


def download_key(cache: api.ModelCacheSpec, store_name: str, namespace: str, private: bool,
                 retry: str | None) -> dict[str, object]:
    """Everything that makes a download: equal keys share one ModelDownload and one Job."""
    key = source_key(cache.source)
    return {
        "store": store_name, "hub": key.hub, "repo": key.repo, "revision": key.revision,
        "filter": filter_dir(key.fields), "endpoint": key.fields.endpoint,
        "namespace": namespace if private else None,
        "token": key.fields.tokenSecretRef.model_dump() if key.fields.tokenSecretRef else None,
        "retry": retry,
    }
