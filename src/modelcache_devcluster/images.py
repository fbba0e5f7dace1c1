"""Container images for the real node, built without a registry or a Docker engine and cached as archives.

- the sandbox (pause) image: hack/node/pause.go, built static and packed with buildah;
- the base the project's Dockerfile starts FROM (python:3.11-slim-bookworm): a minimal Debian bookworm made
  with debootstrap from the Debian mirror apt uses, plus Debian's python3 (3.11) and python3-venv;
- any Dockerfile (the project's own, the serving stand-in): `buildah bud` with the host network, so pip in a
  RUN reaches PyPI.

Each image is saved as a docker-archive under <cache>/<name>-<key>.tar, where key hashes the image's inputs
(and the keys of the images it builds FROM); a present archive is reused. `ctr images import` loads them.
Needs root and Debian's buildah and debootstrap.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .binaries import REPO_ROOT

SANDBOX_IMAGE = "registry.k8s.io/pause:3.10.1"
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
OPERATOR_IMAGE = "docker.io/library/modelcache-operator:test"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
HOST_CA_BUNDLE = Path(os.environ.get("MODELCACHE_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
PAUSE_SOURCE = REPO_ROOT / "hack" / "node" / "pause.go"
# What the base image drops after debootstrap: docs, man pages, locales and apt's caches.
BASE_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt",
             "var/lib/apt/lists", "var/log")


def image_cache() -> Path:
    default = Path.home() / ".cache" / "modelcache-operator" / "images"
    return Path(os.environ.get("MODELCACHE_IMAGE_CACHE", default))


@dataclass(frozen=True)
class BuiltImage:
    name: str
    key: str
    archive: Path


def _run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")
    return result.stdout


def hash_inputs(parts: Iterable[str | Path], root: Path | None = None) -> str:
    """sha256 over strings and the names, modes and contents of files (directories recursively)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            digest.update(b"s\0" + part.encode() + b"\0")
            continue
        files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc" or any(
                    p.endswith(".egg-info") for p in path.parts):
                continue
            name = str(path.relative_to(root)) if root else str(path)
            digest.update(b"f\0" + name.encode() + b"\0" + oct(path.stat().st_mode & 0o777).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


class ImageBuilder:
    """buildah with its own storage under the image cache, so it never touches the host's containers."""

    def __init__(self, cache: Path | None = None):
        self.cache = (cache or image_cache()).resolve()
        self.store = self.cache / "buildah"

    def buildah(self, *args: str, cwd: Path | None = None) -> str:
        return _run("buildah", "--root", str(self.store / "root"), "--runroot", str(self.store / "run"),
                    "--storage-driver", "overlay", *args, cwd=cwd)

    def _archive(self, name: str, key: str) -> Path:
        return self.cache / f"{name.rsplit('/', 1)[-1].replace(':', '-')}-{key}.tar"

    def _save(self, name: str, key: str) -> BuiltImage:
        archive = self._archive(name, key)
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        self.buildah("push", "--quiet", name, f"docker-archive:{partial}:{name}")
        partial.rename(archive)
        self.buildah("rmi", "--prune")  # earlier builds of the same tags, now untagged
        for stale in self.cache.glob(archive.name.replace(key, "*")):
            if stale != archive:  # an older build of the same image
                stale.unlink(missing_ok=True)
        return BuiltImage(name, key, archive)

    def _cached(self, name: str, key: str) -> BuiltImage | None:
        archive = self._archive(name, key)
        return BuiltImage(name, key, archive) if archive.exists() else None

    def _in_store(self, image: BuiltImage) -> None:
        """Makes image available to `FROM` in buildah's store (from its archive, if the store lost it)."""
        if self._store_key(image.name) != image.key:
            self.buildah("pull", "--quiet", f"docker-archive:{image.archive}")

    def _store_key(self, name: str) -> str | None:
        result = subprocess.run(["buildah", "--root", str(self.store / "root"), "--runroot", str(self.store / "run"),
                                 "--storage-driver", "overlay", "inspect", "--type", "image", "--format",
                                 '{{index .OCIv1.Config.Labels "dev.modelcache.build-key"}}', name],
                                capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    # ----- the images -----

    def pause(self) -> BuiltImage:
        key = hash_inputs([SANDBOX_IMAGE, PAUSE_SOURCE], REPO_ROOT)
        if cached := self._cached(SANDBOX_IMAGE, key):
            return cached
        with tempfile.TemporaryDirectory() as work:
            (Path(work) / "go.mod").write_text("module local/pause\n\ngo 1.22\n")
            shutil.copy(PAUSE_SOURCE, Path(work) / "main.go")
            _run("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", "pause", ".", cwd=Path(work),
                 env={**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"})
            container = self.buildah("from", "scratch").strip()
            try:
                self.buildah("copy", container, str(Path(work) / "pause"), "/pause")
                self.buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535",
                             "--label", f"dev.modelcache.build-key={key}", container)
                self.buildah("commit", "--quiet", container, SANDBOX_IMAGE)
            finally:
                self.buildah("rm", container)
        return self._save(SANDBOX_IMAGE, key)

    def base(self) -> BuiltImage:
        key = hash_inputs([BASE_IMAGE, DEBIAN_SUITE, DEBIAN_MIRROR, *BASE_PACKAGES, *BASE_TRIM])
        if cached := self._cached(BASE_IMAGE, key):
            return cached
        self.cache.mkdir(parents=True, exist_ok=True)
        rootfs = Path(tempfile.mkdtemp(dir=self.cache, prefix="rootfs-"))
        try:
            _run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE,
                 str(rootfs), DEBIAN_MIRROR)
            for path in BASE_TRIM:
                shutil.rmtree(rootfs / path, ignore_errors=True)
                (rootfs / path).mkdir(parents=True, exist_ok=True)
            container = self.buildah("from", "scratch").strip()
            try:
                mount = Path(self.buildah("mount", container).strip())
                _run("cp", "-a", f"{rootfs}/.", f"{mount}/")
                self.buildah("umount", container)
                self.buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                             "--env", "LANG=C.UTF-8", "--cmd", "python3",
                             "--label", f"dev.modelcache.build-key={key}", container)
                self.buildah("commit", "--quiet", container, BASE_IMAGE)
            finally:
                self.buildah("rm", container)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        return self._save(BASE_IMAGE, key)

    def dockerfile(self, name: str, dockerfile: Path, context: Path, inputs: Iterable[Path],
                   *, parents: Iterable[BuiltImage], build_args: dict[str, str] | None = None) -> BuiltImage:
        """Builds dockerfile in context; inputs are the files the build reads, parents the images it is FROM."""
        parents = list(parents)
        args = build_args or {}
        key = hash_inputs([name, dockerfile, *inputs, *(f"{p.name}={p.key}" for p in parents),
                           *(f"{k}={v}" for k, v in sorted(args.items()))], context)
        if cached := self._cached(name, key):
            return cached
        for parent in parents:
            self._in_store(parent)
        argv = ["bud", "--quiet", "--pull=never", "--network", "host", "--isolation", "chroot", "--layers=false",
                "--format", "docker", "--label", f"dev.modelcache.build-key={key}", "-f", str(dockerfile),
                "-t", name]
        for k, v in sorted(args.items()):
            argv += ["--build-arg", f"{k}={v}"]
        if HOST_CA_BUNDLE.exists():
            # RUN steps (pip) trust what the host trusts, e.g. a TLS-intercepting proxy's CA; a bind mount, so
            # the image keeps Debian's own bundle.
            argv += ["--volume", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
        self.buildah(*argv, str(context))
        return self._save(name, key)

    def operator(self) -> BuiltImage:
        """The project's own Dockerfile, FROM the debootstrapped base."""
        inputs = [REPO_ROOT / p for p in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "src",
                                          "hack/install-wheel.sh")]
        return self.dockerfile(OPERATOR_IMAGE, REPO_ROOT / "Dockerfile", REPO_ROOT, inputs, parents=[self.base()],
                               build_args={"PYTHON_IMAGE": BASE_IMAGE})
