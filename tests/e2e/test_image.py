"""The operator's image: built with buildah, it carries the operator only and runs it as non-root.

The container runs with ``buildah run`` on the host network: buildah is what builds the image
here already, and needs no daemon or container network to run it. ``buildah run`` starts a
command rather than the entrypoint, so the test starts the entrypoint's command and checks the
image's configured entrypoint separately.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from instance_profile_operator.devenv import image as image_builder
from instance_profile_operator.devenv.cluster import free_port

from ..support.kube import manifest
from ..support.operator import FAST
from ..support.waiting import wait_for

pytestmark = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("mmdebstrap")),
    reason="building the image needs buildah and mmdebstrap (apt-get install buildah mmdebstrap; .ci/run does)")

OPERATOR_USER = "65532:65532"
OPERATOR_PROCESS = ["/opt/operator/bin/python3", "/opt/operator/bin/instance-profile-operator"]  # the script's shebang
KUBECONFIG_IN_CONTAINER = "/etc/operator/kubeconfig"  # not under /var/run: a symlink, which a bind mount does not follow
# Files only the repository has, never the image: the tests, the benchmark, the dev environment.
REPOSITORY_ONLY_FILES = ("faultproxy.py", "test_lifecycle.py", "test_image.py", "converge.py", "RESULTS.md")

INSPECT_FROM_INSIDE = """
import importlib.metadata, importlib.util, json, os
found = [name for top in ("/opt", "/usr", "/src", "/app", "/root", "/home")
         for _, _, files in os.walk(top) for name in files if name in NAMES]
print(json.dumps({
    "uid": os.getuid(),
    "operator": importlib.util.find_spec("instance_profile_operator.bindings.controller") is not None,
    "devenv": importlib.util.find_spec("instance_profile_operator.devenv") is not None,
    "pip": importlib.util.find_spec("pip") is not None,
    "files": sorted(str(f) for f in importlib.metadata.files("instance-profile-operator")),
    "repository_files": found,
}))
"""


def buildah(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["buildah", *image_builder.storage_options(), *args],
                          capture_output=True, text=True, check=True, timeout=120)


@pytest.fixture(scope="module")
def image() -> image_builder.Image:
    return image_builder.ensure_image()


@pytest.fixture(scope="module")
def container(image) -> Iterator[str]:
    """A working container of the image (vfs copies the whole image: one for the module)."""
    name = f"ipo-test-{uuid.uuid4().hex[:8]}"
    buildah("from", "--name", name, image.reference)
    yield name
    buildah("rm", name)


def run_in(container: str, *command: str, options: tuple[str, ...] = ()) -> list[str]:
    return ["buildah", *image_builder.storage_options(), "run", "--isolation", "chroot", "--network", "host",
            *options, container, "--", *command]


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: state, parent pid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except OSError:
                continue
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def running(pid: int) -> bool:
    """True while the process exists and is no zombie waiting to be reaped."""
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def user_ids(pid: int) -> set[int]:
    """The real, effective, saved and filesystem uids of a process."""
    [line] = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")]
    return {int(uid) for uid in line.split()[1:]}


def test_image_carries_the_operator_only_and_runs_as_non_root(image, container):
    config = json.loads(buildah("inspect", "--type", "image", image.reference).stdout)["OCIv1"]["config"]
    assert config["Entrypoint"] == ["instance-profile-operator"]
    assert config["User"] == OPERATOR_USER

    script = f"NAMES = {REPOSITORY_ONLY_FILES!r}\n{INSPECT_FROM_INSIDE}"
    found = json.loads(subprocess.run(run_in(container, "python3", "-c", script),
                                      capture_output=True, text=True, check=True, timeout=120).stdout)
    assert found["uid"] == 65532
    assert found["operator"] and not found["devenv"] and not found["pip"]
    assert found["repository_files"] == []
    package_files = [f for f in found["files"] if f.startswith("instance_profile_operator/")]
    assert package_files and not [f for f in package_files if "devenv" in f]


def test_operator_from_the_image_makes_a_binding_ready(devenv, operator_kubeconfig, container, bindings, new_instance,
                                                        tmp_path):
    port, metrics_port = free_port(), free_port()
    environment = {**devenv.aws_variables(), **FAST, "IPO_POLICY_ENFORCEMENT": "Disabled",
                   "KUBECONFIG": KUBECONFIG_IN_CONTAINER}
    options = ("--volume", f"{operator_kubeconfig}:{KUBECONFIG_IN_CONTAINER}:ro",
               *(arg for name, value in environment.items() for arg in ("--env", f"{name}={value}")))
    command = run_in(container, "instance-profile-operator", "run", "--namespace", bindings.namespace,
                     "--liveness-endpoint", f"http://127.0.0.1:{port}/healthz",
                     "--metrics-address", f"127.0.0.1:{metrics_port}", options=options)
    os.chmod(operator_kubeconfig, 0o644)  # the container's non-root user reads it through the bind mount
    log_path = tmp_path / "operator.log"
    with open(log_path, "wb") as log:
        runner = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz", runner, log_path), 60,
                 "the liveness endpoint of the operator in the container")
        [operator] = [pid for pid in descendants(runner.pid) if command_line(pid)[:2] == OPERATOR_PROCESS]
        assert user_ids(operator) == {65532}

        bindings.create(manifest("from-image", new_instance()))
        wait_for(lambda: bindings.is_ready("from-image"), 60, "the binding to become Ready")
        assert bindings.status("from-image")["state"] == "associated"
    finally:
        started = descendants(runner.pid)
        stop(runner)
    wait_for(lambda: not [pid for pid in started if running(pid)], 30, "the container's processes to end")


def stop(runner: subprocess.Popen) -> None:
    """SIGTERM to buildah, which stops the container's processes; SIGKILL to them all if it hangs."""
    if runner.poll() is None:
        runner.terminate()
        try:
            runner.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(15)


def _answers(url: str, runner: subprocess.Popen, log_path: Path) -> bool:
    if runner.poll() is not None:
        raise RuntimeError(f"the container exited: {log_path.read_text(errors='replace')}")
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False
