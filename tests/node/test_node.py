"""`devenv up --node`: a real node whose pods reach the API server (in-cluster configuration,
through the kubernetes Service) and the dev environment's EC2 endpoint, and nothing else; and
`devenv down` leaves the host exactly as it found it. Needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from instance_profile_operator.devenv import node
from instance_profile_operator.devenv.cluster import Endpoints

from ..support.devenv import devenv_cli
from ..support.kube import kubectl
from ..support.waiting import wait_for

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="the dev node needs root: kubelet, containerd, a bridge, iptables "
                                                 "(CI runs as root)"),
]

UNSERVED_SERVICE_ADDRESS = "10.96.0.250:80"  # in the Service range, but no Service


def _lines(*argv: str) -> list[str]:
    return [line.rstrip() for line in subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()]


def host_state() -> dict[str, object]:
    """What the node may change on the host, in comparable form."""
    rules = [re.sub(r"\[\d+:\d+\]", "", line) for command in ("iptables-save", "ip6tables-save")
             for line in _lines(command) if not line.startswith("#")]
    hierarchies = [h for h in Path("/sys/fs/cgroup").iterdir() if (h / "cgroup.procs").exists()]
    return {
        "routes": _lines("ip", "route", "show", "table", "all"),
        "ipv6 routes": _lines("ip", "-6", "route", "show", "table", "all"),
        "links": sorted(line.split(":")[1].strip() for line in _lines("ip", "-o", "link", "show")),
        "rules": rules,
        "nftables": _lines("nft", "list", "ruleset"),
        "mounts": sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()),
        "sysctls": {name: (Path("/proc/sys") / name).read_text() for name in node.SYSCTLS},
        "cgroups": sorted(str(c) for h in hierarchies for c in h.iterdir() if c.is_dir()),
        "paths": [path for path in (*node.HOST_PATHS, str(node.LOCK_FILE)) if os.path.lexists(path)],
    }


@dataclass(frozen=True)
class NodeEnv:
    directory: Path
    endpoints: Endpoints
    before: dict[str, object]


@pytest.fixture(scope="module")
def node_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeEnv]:
    directory = tmp_path_factory.mktemp("node") / "env"
    before = host_state()
    done = devenv_cli("up", "--dir", str(directory), "--node", timeout=900)
    assert done.returncode == 0, done.stderr + done.stdout
    yield NodeEnv(directory, Endpoints.load(directory), before)
    devenv_cli("down", "--dir", str(directory))


def exported(env: NodeEnv) -> dict[str, str]:
    """What ``devenv env`` exports (values need no unquoting here: no spaces)."""
    done = devenv_cli("env", "--dir", str(env.directory))
    assert done.returncode == 0, done.stderr
    return dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())


def start_pod(env: NodeEnv, pod: dict, condition: str = "condition=Ready") -> str:
    kubectl(env.endpoints, "apply", "-n", "default", "-f", "-", input=json.dumps(pod))
    name = pod["metadata"]["name"]
    kubectl(env.endpoints, "wait", "-n", "default", f"--for={condition}", f"pod/{name}", "--timeout=60s")
    return name


def start_podcheck(env: NodeEnv) -> str:
    """A pod of the podcheck image (tools/podcheck) in ``default``, pointed at the EC2 endpoint
    that ``devenv env`` names for pods; its name once Ready."""
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"podcheck-{uuid.uuid4().hex[:6]}"},
        "spec": {"containers": [{
            "name": "check", "image": node.podcheck_image(), "imagePullPolicy": "Never",
            "env": [{"name": "IPO_AWS_ENDPOINT_URL", "value": exported(env)["IPO_IN_CLUSTER_AWS_ENDPOINT_URL"]},
                    {"name": "IPO_UNSERVED_ADDRESS", "value": UNSERVED_SERVICE_ADDRESS}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1},
        }]},
    }
    return start_pod(env, pod)


def test_the_node_is_ready_and_its_pods_reach_the_api_server_and_the_ec2_endpoint_only(node_env: NodeEnv):
    [condition] = [c for c in json.loads(kubectl(node_env.endpoints, "get", "node", node.NODE_NAME, "-o", "json").stdout)
                   ["status"]["conditions"] if c["type"] == "Ready"]
    assert condition["status"] == "True"
    name = start_podcheck(node_env)
    # Ready means both answered; the report says how
    report = json.loads(kubectl(node_env.endpoints, "logs", "-n", "default", name, "--tail=1").stdout)
    assert report["apiServer"] == f"{node.KUBERNETES_SERVICE_IP}:443 as system:serviceaccount:default:default"
    assert report["endpoint"] == f"{node_env.endpoints.in_cluster_ec2_endpoint_url()} 200 OK"
    # the pod's own subnet and the Service range, through the node: no default route
    assert sorted(report["routes"]) == ["10.88.0.0/255.255.255.0 via 0.0.0.0", "10.96.0.0/255.255.255.0 via 10.88.0.1"]
    assert report["unservedService"].startswith("error: "), report
    # the host forwards nothing, masquerades nothing, and the Service range goes nowhere else
    assert (Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()) == "0"
    assert not [rule for rule in _lines("iptables-save") if "MASQUERADE" in rule or "SNAT" in rule]
    assert f"unreachable {node.SERVICE_CIDR}" in _lines("ip", "route")


@pytest.mark.skipif(not (shutil.which("buildah") and shutil.which("mmdebstrap")),
                    reason="building the image needs buildah and mmdebstrap (apt-get install buildah mmdebstrap; .ci/run does)")
def test_image_load_imports_the_operators_image_and_the_node_runs_it(node_env: NodeEnv):
    done = subprocess.run([sys.executable, "-m", "instance_profile_operator.devenv.image", "load",
                           "--dir", str(node_env.directory)], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    reference = done.stdout.splitlines()[-1]
    assert reference.startswith("localhost/instance-profile-operator:")
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"operator-{uuid.uuid4().hex[:6]}"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "operator", "image": reference, "imagePullPolicy": "Never", "args": ["--help"]}]},
    }
    name = start_pod(node_env, pod, condition="jsonpath={.status.phase}=Succeeded")
    assert "usage: instance-profile-operator" in kubectl(node_env.endpoints, "logs", "-n", "default", name).stdout


def test_down_leaves_the_host_as_it_was(node_env: NodeEnv):
    start_podcheck(node_env)  # mounts, a network namespace, a veth, cgroups, kubelet's chains
    assert host_state() != node_env.before
    done = devenv_cli("down", "--dir", str(node_env.directory))
    assert done.returncode == 0, done.stderr
    after = host_state()
    for key, value in node_env.before.items():
        assert after[key] == value, key
    assert not node_env.directory.exists()
    wait_for(lambda: not _node_processes(), 15, "every process of the node to exit")


def _node_processes() -> list[str]:
    binaries = ("kubelet", "kube-scheduler", "containerd", "containerd-shim-runc-v2", "podcheck", "pause")
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "exe")).name in binaries:
                found.append(entry.name)
        except OSError:
            continue
    return found
