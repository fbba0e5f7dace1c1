"""The Argo CD health check (examples/argocd/health.lua) run by a real Lua interpreter against sample
ModelCaches, plus: the argocd-cm snippet carries exactly that Lua, and the Applications parse.

Needs the Debian packages lua5.4 and lua-cjson; missing ones fail the test with the install command."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ARGOCD = Path(__file__).resolve().parents[2] / "examples" / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
HEALTH_KEY = "resource.customizations.health.modelcache.dev_ModelCache"

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


@pytest.fixture(scope="module")
def lua(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    interpreter = shutil.which("lua5.4")
    assert interpreter, "lua5.4 not found: apt-get install -y lua5.4 lua-cjson"
    probe = subprocess.run([interpreter, "-e", 'require("cjson")'], capture_output=True, text=True)
    assert probe.returncode == 0, f"lua-cjson missing for lua5.4 (apt-get install -y lua-cjson): {probe.stderr}"
    runner = tmp_path_factory.mktemp("lua") / "run.lua"
    runner.write_text(RUNNER)
    return [interpreter, str(runner)]


def health(lua: list[str], obj: dict[str, Any], script: Path = HEALTH_LUA) -> dict[str, str]:
    result = subprocess.run([*lua, str(script)], input=json.dumps(obj), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    decoded: dict[str, str] = json.loads(result.stdout)
    return decoded


def cache(generation: int = 1, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "modelcache.dev/v1alpha1", "kind": "ModelCache",
                            "metadata": {"name": "qwen", "namespace": "llm", "generation": generation},
                            "spec": {"source": {"huggingface": {"repo": "Qwen/Qwen3-0.6B"}}}}
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


@pytest.mark.parametrize("case", sorted(CASES))
def test_health(lua: list[str], case: str) -> None:
    obj, status, message = CASES[case]
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
    assert config["data"][HEALTH_KEY] == HEALTH_LUA.read_text()


def test_applications_order_operator_before_examples() -> None:
    operator = yaml.safe_load((ARGOCD / "modelcache-operator.yaml").read_text())
    examples = yaml.safe_load((ARGOCD / "modelcache-examples.yaml").read_text())
    for app in (operator, examples):
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"

    def wave(app: dict[str, Any]) -> int:
        return int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])

    assert wave(operator) < -1 < wave(examples)
    assert operator["spec"]["source"]["path"] == "charts/modelcache-operator"
    assert operator["spec"]["source"]["helm"]["valuesObject"]["webhook"]["certManager"]["enabled"] is True
    examples_dir = ARGOCD.parent
    included = examples["spec"]["source"]["directory"]["include"].strip("{}").split(",")
    assert len(included) >= 2
    for filename in included:
        waves = {doc["kind"]: int(doc["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", 0))
                 for doc in yaml.safe_load_all((examples_dir / filename).read_text()) if doc}
        # Secrets before the caches that read them, caches before the servers that mount them.
        assert waves.get("Secret", -2) < waves["ModelCache"] == -1 < waves["StatefulSet"]
