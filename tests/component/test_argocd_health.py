"""The Argo CD health check (examples/argocd/health.lua) run by a real Lua interpreter against sample
ModelCaches and ModelStores, plus: the argocd-cm snippet carries exactly that Lua for both kinds, and the
Applications sync the operator, then the stores, then the caches that name them.

Every check runs twice: under lua5.4 (Debian's lua5.4 and lua-cjson) and under gopher-lua, the Lua 5.1 that Argo
CD embeds, with Argo CD's conventions (tests/argocd_lua: only the base, table, string and math libraries, `obj`
a global, JSON null as nil). A missing tool fails the test with how to install it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARGOCD = EXAMPLES / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
GOPHER_LUA = Path(__file__).resolve().parents[1] / "argocd_lua"
HEALTH_KEYS = {f"resource.customizations.health.modelcache.dev_{kind}" for kind in ("ModelStore", "ModelCache")}
WAVE = "argocd.argoproj.io/sync-wave"

# Decodes the object like Argo CD hands it over (JSON null is nil, not cjson.null), runs the check as a
# chunk with `obj` as a global, and prints the result as JSON.
RUNNER = r"""
local cjson = require("cjson")
local function strip(value)
  if value == cjson.null then return nil end
  if type(value) == "table" then
    for k, v in pairs(value) do value[k] = strip(v) end
  end
  return value
end
obj = strip(cjson.decode(io.read("a")))
local check = assert(loadfile(arg[1]))
local hs = check()
io.write(cjson.encode({status = hs.status, message = hs.message}))
"""


def _lua54(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    interpreter = shutil.which("lua5.4")
    assert interpreter, "lua5.4 not found: apt-get install -y lua5.4 lua-cjson"
    probe = subprocess.run([interpreter, "-e", 'require("cjson")'], capture_output=True, text=True)
    assert probe.returncode == 0, f"lua-cjson missing for lua5.4 (apt-get install -y lua-cjson): {probe.stderr}"
    runner = tmp_path_factory.mktemp("lua") / "run.lua"
    runner.write_text(RUNNER)
    return [interpreter, str(runner)]


def _gopher_lua() -> list[str]:
    """Argo CD's own interpreter (gopher-lua, Lua 5.1): tests/argocd_lua built with Go from the module proxy,
    cached under ~/.cache/modelcache-operator/bins by the hash of its sources."""
    go = shutil.which("go")
    assert go, "go not found: the gopher-lua runner is built from tests/argocd_lua with Go"
    digest = hashlib.sha256(b"".join((GOPHER_LUA / n).read_bytes() for n in ("main.go", "go.mod", "go.sum")))
    cache = Path.home() / ".cache" / "modelcache-operator"
    binary = cache / "bins" / f"argocd-health-{digest.hexdigest()[:16]}"
    if not binary.exists():
        env = {**os.environ, "GOMODCACHE": str(cache / "go" / "mod"), "GOCACHE": str(cache / "go" / "build"),
               "GOFLAGS": "-mod=readonly"}
        built = subprocess.run([go, "build", "-o", str(binary), "."], cwd=GOPHER_LUA, env=env,
                               capture_output=True, text=True, timeout=600)
        assert built.returncode == 0, f"building the gopher-lua runner failed:\n{built.stderr}"
    return [str(binary)]


@pytest.fixture(scope="module", params=["lua5.4", "gopher-lua"])
def lua(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Each interpreter as a command that takes the script's path and the object as JSON on stdin."""
    return _lua54(tmp_path_factory) if request.param == "lua5.4" else _gopher_lua()


def health(lua: list[str], obj: dict[str, Any], script: Path = HEALTH_LUA) -> dict[str, str]:
    result = subprocess.run([*lua, str(script)], input=json.dumps(obj), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    decoded: dict[str, str] = json.loads(result.stdout)
    return decoded


def cache(generation: int = 1, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelCache",
                            "metadata": {"name": "qwen", "namespace": "llm", "generation": generation},
                            "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}}}
    if status:
        body["status"] = status
    return body


def store(generation: int = 1, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "modelcache.dev/v1alpha2", "kind": "ModelStore",
                            "metadata": {"name": "nfs-models", "generation": generation},
                            "spec": {"nfs": {"server": "10.0.0.2", "path": "/exports/models"},
                                     "namespaceSelector": {}}}
    if status:
        body["status"] = status
    return body


def ready_condition(state: str, reason: str, message: str) -> list[dict[str, str]]:
    return [{"type": "StorageReady", "status": "True", "reason": "PVCBound", "message": "bound"},
            {"type": "Ready", "status": state, "reason": reason, "message": message}]


CASES = {
    "no status": (cache(), "Progressing", "Waiting for the operator to report status"),
    "ready": (cache(phase="Ready", observedGeneration=1,
                    conditions=ready_condition("True", "Ready", "the model is ready to mount")),
              "Healthy", "the model is ready to mount"),
    "ready condition without phase": (cache(observedGeneration=1, conditions=ready_condition("True", "Ready", "ok")),
                                      "Healthy", "ok"),
    "failed": (cache(phase="Failed", observedGeneration=1,
                     conditions=ready_condition("False", "NotFound", "repo Qwen/Nope not found on the hub")),
               "Degraded", "repo Qwen/Nope not found on the hub"),
    "failed without conditions": (cache(phase="Failed", observedGeneration=1), "Degraded", "ModelCache failed"),
    "downloading": (cache(phase="Downloading", observedGeneration=1, progress={"percent": "42%"},
                          conditions=ready_condition("False", "Downloading", "42% of 3.0GiB")),
                    "Progressing", "Downloading: 42%: 42% of 3.0GiB"),
    "pending": (cache(phase="Pending", observedGeneration=1,
                      conditions=ready_condition("False", "PVCNotBound", "PVC is Pending")),
                "Progressing", "Pending: PVC is Pending"),
    "provisioning": (cache(phase="Provisioning", observedGeneration=1), "Progressing", "Provisioning"),
    "verifying": (cache(phase="Verifying", observedGeneration=1, progress={"percent": ""}), "Progressing",
                  "Verifying"),
    "deleting": (cache(phase="Deleting", observedGeneration=1,
                       conditions=ready_condition("False", "InUse", "used by pod server")),
                 "Progressing", "Deleting: used by pod server"),
    # A spec change in Git: the old Ready status must not count until the operator has seen the new spec.
    "stale ready": (cache(generation=2, phase="Ready", observedGeneration=1,
                          conditions=ready_condition("True", "Ready", "old revision")),
                    "Progressing", "Waiting for the operator to observe generation 2"),
    "stale failed": (cache(generation=3, phase="Failed", observedGeneration=2), "Progressing",
                     "Waiting for the operator to observe generation 3"),
    "status without observedGeneration": (cache(phase="Ready"), "Progressing",
                                          "Waiting for the operator to observe generation 1"),
    "null fields": (cache(phase="Downloading", observedGeneration=1, progress=None, conditions=None),
                    "Progressing", "Downloading"),
}


STORE_CASES = {
    "no status": (store(), "Progressing", "Waiting for the operator to report status"),
    "ready": (store(phase="Ready", observedGeneration=1, backend="nfs",
                    conditions=[{"type": "Ready", "status": "True", "reason": "Ready", "message": "nfs, 3 revisions"}]),
              "Healthy", "nfs, 3 revisions"),
    "ready condition without phase": (
        store(observedGeneration=1, conditions=[{"type": "Ready", "status": "True", "reason": "Ready",
                                                 "message": "ok"}]), "Healthy", "ok"),
    "invalid": (store(phase="Invalid", observedGeneration=1,
                      conditions=[{"type": "Ready", "status": "False", "reason": "HostPathNotAllowed",
                                   "message": "hostPath stores need stores.allowHostPath"}]),
                "Degraded", "hostPath stores need stores.allowHostPath"),
    "invalid without conditions": (store(phase="Invalid", observedGeneration=1), "Degraded",
                                   "ModelStore is invalid"),
    "not ready yet": (store(observedGeneration=1, conditions=[{"type": "Ready", "status": "False",
                                                               "reason": "SecretNotFound", "message": "no hf-token"}]),
                      "Progressing", "no hf-token"),
    "stale ready": (store(generation=2, phase="Ready", observedGeneration=1), "Progressing",
                    "Waiting for the operator to observe generation 2"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_health(lua: list[str], case: str) -> None:
    obj, status, message = CASES[case]
    assert health(lua, obj) == {"status": status, "message": message}


@pytest.mark.parametrize("case", sorted(STORE_CASES))
def test_store_health(lua: list[str], case: str) -> None:
    obj, status, message = STORE_CASES[case]
    assert health(lua, obj) == {"status": status, "message": message}


def test_the_runner_reports_a_broken_script(lua: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.lua"
    broken.write_text("return {status = obj.status.missing.deeper}\n")
    result = subprocess.run([*lua, str(broken)], input=json.dumps(cache(phase="Ready")), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0


def test_argocd_cm_snippet_is_the_tested_script() -> None:
    config = yaml.safe_load((ARGOCD / "argocd-cm-health.yaml").read_text())
    assert config["kind"] == "ConfigMap" and config["metadata"]["name"] == "argocd-cm"
    assert set(config["data"]) == HEALTH_KEYS
    for key in HEALTH_KEYS:
        assert config["data"][key] == HEALTH_LUA.read_text(), key


def application(name: str) -> dict[str, Any]:
    app: dict[str, Any] = yaml.safe_load((ARGOCD / f"{name}.yaml").read_text())
    # Argo CD serves Applications as argoproj.io/v1alpha1 only.
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application", name
    assert app["metadata"]["name"] == name and app["metadata"]["namespace"] == "argocd"
    return app


def wave(obj: dict[str, Any]) -> int:
    return int(obj["metadata"].get("annotations", {}).get(WAVE, 0))


def included(app: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The documents of each file the Application syncs, by file name."""
    source = app["spec"]["source"]
    assert source["directory"]["recurse"] is False
    folder = EXAMPLES.parent / source["path"]
    names = source["directory"]["include"].removeprefix("{").removesuffix("}").split(",")
    return {name: [d for d in yaml.safe_load_all((folder / name).read_text()) if d] for name in names}


def test_applications_sync_operator_then_stores_then_caches() -> None:
    operator, stores, examples = (application(n) for n in ("modelcache-operator", "modelcache-stores",
                                                            "modelcache-examples"))
    assert (wave(operator), wave(stores), wave(examples)) == (-2, -1, 0)
    assert operator["spec"]["source"]["path"] == "charts/modelcache-operator"
    assert operator["spec"]["source"]["helm"]["valuesObject"]["webhook"]["certManager"]["enabled"] is True
    assert stores["spec"]["source"]["path"] == "examples/stores"
    assert stores["spec"]["destination"]["namespace"] == "modelcache-system"
    assert examples["spec"]["source"]["path"] == "examples"

    # The admin's Application: Secrets (in the operator's namespace) before the stores that name them.
    store_docs = [d for docs in included(stores).values() for d in docs]
    assert {d["kind"] for d in store_docs} == {"Secret", "ModelStore"}
    secrets = {d["metadata"]["name"]: d for d in store_docs if d["kind"] == "Secret"}
    synced_stores = {d["metadata"]["name"]: d for d in store_docs if d["kind"] == "ModelStore"}
    assert {d["metadata"]["namespace"] for d in secrets.values()} == {"modelcache-system"}
    assert max(wave(d) for d in secrets.values()) < min(wave(d) for d in synced_stores.values())
    for name, body in synced_stores.items():
        assert "namespace" not in body["metadata"], f"ModelStore {name} is cluster-scoped"
        spec = body["spec"]
        named = [spec.get("hubCredentials", {}).get(hub, {}).get("name") for hub in ("huggingface", "modelscope")]
        named.append(spec.get("ossfs2", {}).get("secretRef", {}).get("name"))
        assert {n for n in named if n} <= set(secrets), f"ModelStore {name} names a Secret it does not sync"

    # The team's Application: caches before the servers that mount them, and only stores synced earlier.
    files = included(examples)
    assert len(files) >= 2
    for filename, docs in files.items():
        waves = {d["kind"]: wave(d) for d in docs}
        assert "Secret" not in waves, f"{filename}: hub tokens are the store admin's"
        assert waves["ModelCache"] == -1 < waves["StatefulSet"] == 0, filename
        for cache in (d for d in docs if d["kind"] == "ModelCache"):
            assert cache["spec"]["store"] in synced_stores, (filename, cache["metadata"]["name"])


STORE_OF_EXAMPLE = {
    "ossfs2-vllm-deepseek-r1.yaml": "oss-models",
    "nfs-sglang.yaml": "nfs-models",
    "efs.yaml": "efs-models",
    "storageclass.yaml": "rwx-models",
    "modelscope-mirror.yaml": "nfs-models",
    "draft-and-target.yaml": "nfs-models",
}
STORE_FILES = {"ossfs2.yaml": ("oss-models", "ossfs2"), "nfs.yaml": ("nfs-models", "nfs"),
               "efs.yaml": ("efs-models", "efs"), "storageclass.yaml": ("rwx-models", "storageClass"),
               "hostpath-dev.yaml": ("dev-hostpath", "hostPath")}


def test_every_example_cache_names_an_example_store() -> None:
    stores = {}
    for filename, (name, backend) in STORE_FILES.items():
        [body] = [d for d in yaml.safe_load_all((EXAMPLES / "stores" / filename).read_text())
                  if d and d["kind"] == "ModelStore"]
        assert body["apiVersion"] == "modelcache.dev/v1alpha2" and body["metadata"]["name"] == name
        backends = [b for b in ("ossfs2", "nfs", "efs", "storageClass", "hostPath") if b in body["spec"]]
        assert backends == [backend], filename
        assert "namespaceSelector" in body["spec"], filename
        stores[name] = body
    assert [n for n, s in stores.items() if s["spec"].get("default")] == ["nfs-models"], "one default store"
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(STORE_OF_EXAMPLE)
    for filename, store_name in STORE_OF_EXAMPLE.items():
        caches = [d for d in yaml.safe_load_all((EXAMPLES / filename).read_text()) if d and d["kind"] == "ModelCache"]
        assert caches, filename
        for cache in caches:
            assert cache["apiVersion"] == "modelcache.dev/v1alpha2", filename
            assert "storage" not in cache["spec"], filename
            assert cache["spec"]["store"] == store_name, filename
