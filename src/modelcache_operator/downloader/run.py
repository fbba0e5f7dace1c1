"""The download itself: plan, fetch into `<root>/<sha>/`, verify, publish the manifest last.

The pydantic models (the manifest, the status report) are imported by a thread while the bytes flow: their
import is a large part of a run's fixed time, and outside a cluster (no status reports) nothing before the
last byte needs them.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import importlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from .errors import ChecksumMismatch, DownloadError, LockHeld, NetworkError, QuotaExceeded, UnsafeFileName
from .hashing import git_blob_sha1, sha256_file
from .lock import VolumeLock
from .plan import (
    META_DIR,
    Plan,
    RemoteFile,
    check_revision_name,
    check_safe_path,
    check_space,
    free_bytes,
    human_bytes,
    manifest_path,
)
from .progress import Progress
from .report import NullReporter, Reporter
from .sources import Source

if TYPE_CHECKING:
    from modelcache_operator.api.v1alpha2 import DownloadReport

    from .manifest import Manifest

log = logging.getLogger("modelcache.downloader")
T = TypeVar("T")
State = Literal["Resolving", "Downloading", "Verifying", "Published", "Failed"]
VERIFIED_DIR = "verified"  # under .modelcache/: per-file hash records so a resumed run need not re-hash


@dataclass
class Config:
    hub: str
    repo: str
    revision: str
    root: Path
    allow_patterns: list[str] | None = None
    ignore_patterns: list[str] | None = None
    endpoint: str | None = None
    token: str | None = field(default=None, repr=False)
    max_workers: int = 8
    job_name: str = ""
    lock_identity: dict[str, str | int] = field(default_factory=dict)
    lock_stale_seconds: float = 60.0
    lock_heartbeat_seconds: float = 5.0
    lock_wait_seconds: float = 70.0
    progress_interval: float = 5.0
    retries: int = 5
    retry_backoff: float = 1.0
    # What the store's quota leaves for this download (the operator's count at Job creation); None: no quota.
    quota_free_bytes: int | None = None
    # The commit an earlier pod or Job of this download resolved `revision` to: fetched, never re-resolved.
    pinned_revision: str | None = None


class Downloader:
    def __init__(self, cfg: Config, source: Source, reporter: Reporter) -> None:
        self.cfg = cfg
        self.source = source
        self.reporter = reporter
        self.plan: Plan | None = None
        self.progress: Progress | None = None
        self.last_report: DownloadReport | None = None
        self._stop = threading.Event()

    # ----- reporting -----

    def report(self, state: State, force: bool = False, reason: str | None = None, message: str | None = None,
               manifest: Manifest | None = None) -> None:
        if isinstance(self.reporter, NullReporter) and state not in ("Published", "Failed"):
            return  # nobody reads progress outside a cluster; only the final report is kept
        from modelcache_operator.api.v1alpha2 import DownloadReport  # noqa: PLC0415  (pydantic: see the top)

        from .manifest import now_rfc3339  # noqa: PLC0415

        p, plan = self.progress, self.plan
        report = DownloadReport(
            jobName=self.cfg.job_name, state=state, requestedRevision=self.cfg.revision,
            resolvedRevision=plan.revision if plan else None,
            bytesDone=p.bytes_done if p else 0, bytesTotal=p.bytes_total if p else 0,
            filesDone=p.files_done if p else 0, filesTotal=p.files_total if p else 0,
            bytesPerSecond=int(p.rate) if p else 0, reason=reason, message=message,
            format=manifest.format if manifest else None,
            architecture=manifest.model.architecture if manifest else None,
            dtype=manifest.model.dtype if manifest else None,
            quantization=manifest.model.quantization if manifest else None,
            updatedAt=now_rfc3339())
        if manifest:
            report.bytesDone = report.bytesTotal = manifest.totalBytes
            report.filesDone = report.filesTotal = manifest.fileCount
        self.last_report = report
        self.reporter.send(report, force=force)

    def fail(self, error: DownloadError, message: str) -> None:
        self.report("Failed", reason=error.reason, message=message)

    def _ticker(self) -> None:
        while not self._stop.wait(self.cfg.progress_interval):
            if self.progress is None:
                continue
            self.progress.tick()
            log.info("Downloading %s", self.progress.line())
            self.report("Downloading")

    # ----- steps -----

    def _with_retries(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.cfg.retries + 1):
            try:
                return fn()
            except NetworkError as e:
                if attempt == self.cfg.retries or self._stop.is_set():
                    raise
                delay = min(self.cfg.retry_backoff * 2**attempt, 30.0)
                log.warning("%s failed (%s); retry %d/%d in %.1fs", what, e, attempt + 1, self.cfg.retries,
                            delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def run(self) -> Manifest:
        root = self.cfg.root
        root.mkdir(parents=True, exist_ok=True)
        lock = VolumeLock(root, self.cfg.lock_identity, stale_after=self.cfg.lock_stale_seconds,
                          heartbeat_interval=self.cfg.lock_heartbeat_seconds, wait=self.cfg.lock_wait_seconds)
        lock.acquire()
        ticker = threading.Thread(target=self._ticker, name="progress", daemon=True)
        try:
            self.report("Resolving", force=True)
            wanted = self.cfg.pinned_revision or self.cfg.revision
            if self.cfg.pinned_revision:
                log.info("%s of %s was resolved to %s by an earlier run of this download: fetching that commit",
                         self.cfg.revision, self.cfg.repo, wanted)
            log.info("Resolving %s %s@%s", self.cfg.hub, self.cfg.repo, wanted)
            plan = self._with_retries("listing files", lambda: self.source.plan(
                wanted, self.cfg.allow_patterns, self.cfg.ignore_patterns))
            plan = replace(plan, requested_revision=self.cfg.revision)
            check_revision_name(plan.revision)
            for f in plan.files:
                check_safe_path(f.path)
            self.plan = plan
            target = root / plan.revision
            log.info("Resolved %s to %s: %d files, %s", self.cfg.revision, plan.revision, len(plan.files),
                     human_bytes(plan.total_bytes))
            self.progress = Progress(len(plan.files), plan.total_bytes, 0)
            self.report("Resolving", force=True)

            published = self._published(target, plan)
            if published is not None:
                log.info("%s is already published; nothing to download", target)
                self.report("Published", manifest=published)
                return published

            if target.is_symlink():
                raise UnsafeFileName(f"{target} is a symlink")
            self._check_quota(plan)
            target.mkdir(exist_ok=True)
            already = sum(self.source.partial_bytes(target, f) for f in plan.files)
            check_space(plan.total_bytes - already, free_bytes(target), target)
            self.progress = Progress(len(plan.files), plan.total_bytes, already)
            if already:
                log.info("Resuming: %s of %s already on the volume", human_bytes(already),
                         human_bytes(plan.total_bytes))
            self.report("Downloading", force=True)
            ticker.start()
            threading.Thread(target=_load_publish_modules, name="imports", daemon=True).start()
            hashes = self._fetch_all(plan, target, lock)
            self._stop.set()
            self.progress.tick()
            log.info("Downloaded %s", self.progress.line())

            self.report("Verifying", force=True)
            manifest = self._publish(plan, target, hashes, lock)
            self.report("Published", manifest=manifest)
            log.info("Published %s (%s, %d files, format %s)", target, human_bytes(manifest.totalBytes),
                     manifest.fileCount, manifest.format)
            return manifest
        finally:
            self._stop.set()
            lock.release()

    def _check_quota(self, plan: Plan) -> None:
        free = self.cfg.quota_free_bytes
        if free is not None and plan.total_bytes > free:
            raise QuotaExceeded(f"the revision needs {human_bytes(plan.total_bytes)} ({plan.total_bytes} bytes); "
                                f"the store's quota leaves {human_bytes(max(free, 0))} ({max(free, 0)} bytes) after "
                                "the revisions in use and the downloads in flight")

    def _published(self, target: Path, plan: Plan) -> Manifest | None:
        if not manifest_path(target).exists():
            return None
        from .manifest import ManifestInvalid, load_manifest, verify_manifest  # noqa: PLC0415  (pydantic)

        try:
            manifest = verify_manifest(target)
        except (ManifestInvalid, ValueError) as e:
            log.warning("Existing manifest of %s does not verify (%s); repairing the folder", target, e)
            # A once-complete file of the wrong size is damaged, not partial: do not resume it.
            with contextlib.suppress(OSError, ValueError):
                for f in load_manifest(target).files:
                    p = target / f.path
                    if p.is_file() and not p.is_symlink() and p.stat().st_size != f.size:
                        p.unlink()
        else:
            if {f.path for f in plan.files} <= {f.path for f in manifest.files}:
                return manifest
            log.warning("Existing manifest of %s lacks files of this plan; downloading them", target)
        # Unpublish before touching the folder, so nobody trusts it while it changes.
        manifest_path(target).unlink()
        return None

    def _fetch_all(self, plan: Plan, target: Path, lock: VolumeLock) -> dict[str, str]:
        records = self._load_records(target)
        hashes: dict[str, str] = {}
        # Small files first: config.json and tokenizer files are done early, big shards share the bandwidth.
        files = sorted(plan.files, key=lambda f: f.size)
        with cf.ThreadPoolExecutor(max_workers=self.cfg.max_workers, thread_name_prefix="fetch") as pool:
            futures = {pool.submit(self._ensure, plan, f, target, records.get(f.path)): f for f in files}
            pending: set[cf.Future[str]] = set(futures)
            try:
                while pending:
                    done, pending = cf.wait(pending, timeout=1.0, return_when=cf.FIRST_EXCEPTION)
                    for fut in done:
                        hashes[futures[fut].path] = fut.result()
                    if lock.lost.is_set():
                        raise LockHeld(f"lost the volume lock {lock.path} during the download")
            except BaseException:
                self._stop.set()
                for fut in pending:
                    fut.cancel()
                raise
        return hashes

    def _matches(self, f: RemoteFile, path: Path, sha256: str) -> bool:
        if f.sha256:
            return sha256 == f.sha256.lower()
        if f.git_oid:
            return git_blob_sha1(path, f.size) == f.git_oid
        return True

    def _ensure(self, plan: Plan, f: RemoteFile, target: Path, record: dict[str, object] | None) -> str:
        """Make `target/f.path` complete and verified; return its sha256."""
        assert self.progress is not None
        path = target / f.path
        if path.is_symlink():
            raise UnsafeFileName(f"{f.path} is a symlink on the volume")
        if path.is_file() and path.stat().st_size == f.size:
            st = path.stat()
            if record and record.get("size") == f.size and record.get("mtimeNs") == st.st_mtime_ns:
                sha = str(record["sha256"])
            else:
                sha = sha256_file(path).hexdigest()
            if self._matches(f, path, sha):
                self._save_record(target, f, path, sha)
                self.progress.file_done()
                return sha
            log.warning("%s on the volume does not match the hub's checksum; downloading it again", f.path)
            self.source.discard(target, f)
            self.progress.add(-f.size)

        for attempt in (1, 2):
            if self._stop.is_set():
                raise DownloadError("stopped")
            got = self._with_retries(f"downloading {f.path}",
                                     lambda: self.source.fetch(plan, f, target, self.progress_add))
            sha = got if got is not None else sha256_file(path).hexdigest()
            if path.stat().st_size == f.size and self._matches(f, path, sha):
                self._save_record(target, f, path, sha)
                self.progress.file_done()
                return sha
            self.source.discard(target, f)
            self.progress.add(-f.size)
            expected = f.sha256 or f.git_oid
            if attempt == 2:
                raise ChecksumMismatch(f"{f.path}: got sha256 {sha}, the hub says {expected}, twice")
            log.warning("%s: checksum mismatch (got sha256 %s, hub says %s); downloading it once more",
                        f.path, sha, expected)
        raise AssertionError("unreachable")

    def progress_add(self, n: int) -> None:
        if self.progress is not None:
            self.progress.add(n)

    # ----- per-file hash records (resume without re-reading) -----

    @staticmethod
    def _record_path(target: Path, rel: str) -> Path:
        return target / META_DIR / VERIFIED_DIR / (hashlib.sha256(rel.encode()).hexdigest()[:32] + ".json")

    def _load_records(self, target: Path) -> dict[str, dict[str, object]]:
        records: dict[str, dict[str, object]] = {}
        d = target / META_DIR / VERIFIED_DIR
        if d.is_dir():
            for p in d.iterdir():
                with contextlib.suppress(OSError, ValueError):
                    r = json.loads(p.read_bytes())
                    if isinstance(r, dict) and isinstance(r.get("path"), str):
                        records[r["path"]] = r
        return records

    def _save_record(self, target: Path, f: RemoteFile, path: Path, sha: str) -> None:
        p = self._record_path(target, f.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = {"path": f.path, "size": f.size, "sha256": sha, "mtimeNs": path.stat().st_mtime_ns}
        p.write_text(json.dumps(data))

    # ----- publish -----

    def _publish(self, plan: Plan, target: Path, hashes: dict[str, str], lock: VolumeLock) -> Manifest:
        from .manifest import (  # noqa: PLC0415  (pydantic: see the top)
            Manifest,
            ManifestFile,
            ManifestSource,
            detect_format,
            model_info,
            now_rfc3339,
            read_config,
            size_problems,
            write_manifest,
        )

        problems = size_problems(target, ((f.path, f.size) for f in plan.files))
        if problems:
            raise ChecksumMismatch("; ".join(problems[:5]))
        for dirpath, dirnames, filenames in os.walk(target):
            for name in dirnames + filenames:
                if os.path.islink(os.path.join(dirpath, name)):
                    rel = os.path.relpath(os.path.join(dirpath, name), target)
                    raise UnsafeFileName(f"refusing to publish a folder with a symlink: {rel}")
        paths = [f.path for f in plan.files]
        manifest = Manifest(
            source=ManifestSource(hub=plan.hub, repo=plan.repo,
                                  requestedRevision=plan.requested_revision, endpoint=plan.endpoint),
            revision=plan.revision,
            files=[ManifestFile(path=f.path, size=f.size, sha256=hashes[f.path], verified=f.hashed)
                   for f in sorted(plan.files, key=lambda f: f.path)],
            totalBytes=plan.total_bytes, fileCount=len(plan.files), format=detect_format(paths),
            model=model_info(read_config(target) if "config.json" in paths else None, paths),
            createdAt=now_rfc3339())
        lock.check_held()  # fencing: only the current holder publishes
        write_manifest(target, manifest)
        shutil.rmtree(target / META_DIR / VERIFIED_DIR, ignore_errors=True)
        return manifest


def _load_publish_modules() -> None:
    """What verifying and publishing need, loaded meanwhile rather than after the last byte."""
    importlib.import_module("modelcache_operator.api.v1alpha2")
    importlib.import_module(f"{__package__}.manifest")
