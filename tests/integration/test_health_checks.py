"""Health of a binding or a set as Argo CD (deploy/argocd/health.lua) and Flux (kstatus) compute it.

The cases are deploy/argocd/health_test.yaml, laid out like Argo CD's own health check tests.
health.lua runs in a real Lua 5.1 with only the libraries Argo CD opens for custom checks;
kstatus is sigs.k8s.io/cli-utils' own code (tools/kstatus-check), run over the same objects.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from instance_profile_operator.devenv import gotools

from ..support.kube import REPO, kubectl

ARGOCD = REPO / "deploy" / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
RUNNER = REPO / "tests" / "support" / "argocd_health.lua"
CASES = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
CASE_IDS = [Path(case["inputPath"]).stem for case in CASES]

# What Flux waits for, given what Argo CD shows.
KSTATUS_OF = {"Healthy": "Current", "Progressing": "InProgress", "Degraded": "Failed"}
# kstatus calls an object with no status and no observedGeneration Current: it cannot tell a
# custom resource nobody has looked at yet from one that needs no status.
KSTATUS_EXCEPTIONS = {"progressing_no_status": "Current", "set_progressing_no_status": "Current"}


def lua_literal(value: Any) -> str:
    """``value`` (parsed YAML/JSON) as a Lua 5.1 table constructor or scalar."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in value.encode())
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(str(k))}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}: quote it in the YAML")


@pytest.fixture(scope="module")
def lua() -> str:
    found = shutil.which("lua5.1")
    if found is None:
        pytest.skip("lua5.1 is not installed (.ci/run installs it: apt-get install lua5.1)")
    return found


def run_health(lua: str, script: Path, obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    source = tmp_path / "object.lua"
    source.write_text("return " + lua_literal(obj) + "\n")
    done = subprocess.run([lua, str(RUNNER), str(script), str(source)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status, message = done.stdout.rstrip("\n").split("\t", 1)
    return status, message


def load(case: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load((ARGOCD / case["inputPath"]).read_text())


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_argocd_health(lua, case, tmp_path):
    expected = case["healthStatus"]
    assert run_health(lua, HEALTH_LUA, load(case), tmp_path) == (expected["status"], expected["message"])


@pytest.mark.parametrize("script, error", [
    ('return {status = string.upper("healthy")}', "attempt to index global 'string'"),
    ('return {status = ("healthy"):upper()}', "attempt to index a string value"),
    ('return {status = os.getenv("HOME")}', "attempt to index global 'os'"),
])
def test_runner_opens_only_the_libraries_argocd_opens(lua, tmp_path, script, error):
    check = tmp_path / "check.lua"
    check.write_text(script)
    source = tmp_path / "object.lua"
    source.write_text("return {}\n")
    done = subprocess.run([lua, str(RUNNER), str(check), str(source)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and error in done.stderr


def test_lua_literal_keeps_strings_byte_exact(lua, tmp_path):
    text = 'quote " backslash \\ newline \n tab \t unicode é ✓'
    check = tmp_path / "check.lua"
    check.write_text("return {status = obj.text, message = table.concat(obj.list, ',')}")
    assert run_health(lua, check, {"text": text.replace("\t", " "), "list": ["a", "b"]}, tmp_path) == (
        text.replace("\t", " "), "a,b")


def test_every_testdata_object_is_a_case():
    listed = {ARGOCD / case["inputPath"] for case in CASES}
    assert listed == set((ARGOCD / "testdata").glob("*.yaml"))


@pytest.fixture(scope="module")
def kstatus_check() -> Path:
    return gotools.ensure_built(gotools.KSTATUS_CHECK)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_kstatus_agrees_with_argocd(kstatus_check, case):
    stem = Path(case["inputPath"]).stem
    expected = KSTATUS_EXCEPTIONS.get(stem, KSTATUS_OF[case["healthStatus"]["status"]])
    done = subprocess.run([str(kstatus_check), str(ARGOCD / case["inputPath"])], capture_output=True, text=True,
                          timeout=30, check=True)
    assert json.loads(done.stdout)["status"] == expected


def test_testdata_objects_are_valid_bindings_and_sets_with_valid_status(devenv, namespace):
    """The API server accepts each object, status included (checked through the status subresource)."""
    for case in CASES:
        obj = load(case)
        obj["metadata"] = {"name": obj["metadata"]["name"], "namespace": namespace}
        document = json.dumps(obj)
        kubectl(devenv, "apply", "-f", "-", input=document)
        if "status" in obj:
            kubectl(devenv, "replace", "--subresource=status", "--dry-run=server", "-f", "-", input=document)
        kubectl(devenv, "delete", "-f", "-", "--wait=false", input=document)
