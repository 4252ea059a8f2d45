"""`devenv up --node`: a real node whose pods reach the API server (in-cluster configuration,
through the kubernetes Service) and the dev environment's EC2 endpoint, and nothing else; and
`devenv down` leaves the host exactly as it found it. Needs root (CI runs as root)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from instance_profile_operator.devenv import node

from ..support.devenv import devenv_cli
from ..support.kube import kubectl
from ..support.waiting import wait_for
from .conftest import (NEEDS_IMAGE_BUILDER, NODE_TESTS, NodeEnv, exported, host_state, lines, load_image,
                       node_processes, start_pod)

pytestmark = NODE_TESTS

UNSERVED_SERVICE_ADDRESS = "10.96.0.250:80"  # in the Service range, but no Service


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
    assert not [rule for rule in lines("iptables-save") if "MASQUERADE" in rule or "SNAT" in rule]
    routes = lines("ip", "route")
    assert f"unreachable {node.SERVICE_CIDR}" in routes
    assert f"unreachable {node.POD_CIDR} metric {node.FALLBACK_METRIC}" in routes  # were the bridge gone


@NEEDS_IMAGE_BUILDER
def test_image_load_imports_the_operators_image_and_the_node_runs_it(node_env: NodeEnv):
    reference = load_image(node_env)
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
    wait_for(lambda: not node_processes(), 15, "every process of the node to exit")

