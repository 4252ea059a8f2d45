"""`devenv up` / `down` from the command line: ready, usable, and no orphans ever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from instance_profile_operator.devenv import gotools
from instance_profile_operator.devenv.cluster import Endpoints

from ..support.devenv import devenv_cli
from ..support.kube import REPO, kubectl
from ..support.waiting import wait_for


def processes_of(directory: Path, endpoints: Endpoints) -> list[int]:
    """PIDs whose command line names the environment's directory or moto's port."""
    moto_port = endpoints.ec2_endpoint_url.rsplit(":", 1)[1]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if str(directory) in text or ("moto.server" in text and f"-p {moto_port}" in text):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def directory(tmp_path: Path):
    yield tmp_path / "env"
    devenv_cli("down", "--dir", str(tmp_path / "env"))


def test_up_writes_kubeconfig_and_aws_env_and_down_removes_everything(directory: Path):
    done = devenv_cli("up", "--dir", str(directory))
    assert done.returncode == 0, done.stderr
    assert "ready in" in done.stdout
    endpoints = Endpoints.load(directory)
    assert kubectl(endpoints, "get", "--raw", "/readyz").stdout == "ok"
    exports = dict(line.removeprefix("export ").split("=", 1) for line in (directory / "aws.env").read_text().splitlines())
    assert set(exports) == {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert exports["AWS_ENDPOINT_URL"] == endpoints.ec2_endpoint_url
    # ready for an operator: the CRDs, the demo's policy, the webhook wired to the API server
    assert kubectl(endpoints, "get", "ipp", "allow-default", "-o", "name").stdout.strip() == \
        "instanceprofilepolicy.ec2.instanceprofiles.dev/allow-default"
    webhook = json.loads(kubectl(endpoints, "get", "validatingwebhookconfiguration", "instance-profile-operator", "-o", "json").stdout)
    operator_env = dict(line.removeprefix("export ").split("=", 1) for line in (directory / "operator.env").read_text().splitlines())
    assert webhook["webhooks"][0]["clientConfig"]["url"] == f"https://{operator_env['IPO_WEBHOOK_ADDRESS']}/tenancy"
    assert webhook["webhooks"][0]["failurePolicy"] == "Ignore"  # no operator yet: kubectl apply still works
    assert Path(operator_env["IPO_WEBHOOK_CERT_FILE"]).is_file() and Path(operator_env["IPO_WEBHOOK_KEY_FILE"]).is_file()
    pids = processes_of(directory, endpoints)
    assert len(pids) >= 5  # supervisor, etcd, kube-apiserver, kube-controller-manager, moto

    done = devenv_cli("down", "--dir", str(directory))
    assert done.returncode == 0, done.stderr
    wait_for(lambda: not any(alive(pid) for pid in pids), 15, "every process to exit")
    assert not directory.exists()


def test_env_prints_exports_a_shell_can_eval(directory: Path):
    assert devenv_cli("up", "--dir", str(directory)).returncode == 0
    endpoints = Endpoints.load(directory)
    exports = devenv_cli("env", "--dir", str(directory))
    assert exports.returncode == 0, exports.stderr
    script = ('eval "$1"; command -v kubectl; echo "$KUBECONFIG $AWS_ENDPOINT_URL ${IPO_IN_CLUSTER_AWS_ENDPOINT_URL-none}";'
              ' echo "${PATH%%:*}"; kubectl get --raw /readyz')
    shell = subprocess.run(["bash", "-c", script, "-", exports.stdout], capture_output=True, text=True, timeout=60,
                           env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")})
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.splitlines() == [
        f"{endpoints.bin_dir}/kubectl",
        f"{endpoints.kubeconfig} {endpoints.ec2_endpoint_url} none",  # no node, no in-cluster endpoint
        endpoints.bin_dir,
        "ok",
    ]
    assert f"{gotools.HELM.binary().parent}:" in exports.stdout


def test_seeded_instances_are_the_ones_the_examples_name(directory: Path):
    assert devenv_cli("up", "--dir", str(directory)).returncode == 0
    seeded = set(json.loads((directory / "instances.json").read_text()).values())
    named = {yaml.safe_load(path.read_text())["spec"]["instanceId"] for path in (REPO / "examples").glob("*.yaml")}
    assert named and named <= seeded


def test_a_killed_supervisor_takes_its_processes_along(directory: Path):
    assert devenv_cli("up", "--dir", str(directory)).returncode == 0
    endpoints = Endpoints.load(directory)
    pids = processes_of(directory, endpoints)
    supervisor = int((directory / "supervisor.pid").read_text())
    assert supervisor in pids
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in pids), 15, "etcd, kube-apiserver, kube-controller-manager and moto to die with the supervisor")
