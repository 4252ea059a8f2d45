"""The Helm chart installed by real `helm` on the dev node, as a platform team does: the image from
`make image` (loaded with `devenv.image load`), the chart's defaults but for image, region and
endpoint, and the moto endpoint's test keys (no IRSA here yet). Needs root (CI runs as root)."""

from __future__ import annotations

import json
import subprocess

from instance_profile_operator.devenv import gotools

from ..support.kube import REPO, kubectl
from ..support.waiting import wait_for
from .conftest import NEEDS_IMAGE_BUILDER, NODE_TESTS, NodeEnv, exported, load_image

pytestmark = [*NODE_TESTS, NEEDS_IMAGE_BUILDER]

CHART = REPO / "deploy" / "helm" / "instance-profile-operator"
NAMESPACE = "instance-profile-operator"
LEASE = "instance-profile-operator"


def helm(env: NodeEnv, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(gotools.ensure_built(gotools.HELM)), f"--kubeconfig={env.endpoints.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=600)


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def test_helm_install_runs_two_ready_replicas_one_leads_and_a_binding_goes_ready(node_env: NodeEnv):
    repository, tag = load_image(node_env).rsplit(":", 1)
    endpoint = exported(node_env)["IPO_IN_CLUSTER_AWS_ENDPOINT_URL"]
    keys = [{"name": name, "value": "testing"} for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    done = helm(node_env, "install", "ipo", str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                "--set", f"aws.region={node_env.endpoints.region}",
                "--set", f"aws.endpoints.ec2={endpoint}", "--set", f"aws.endpoints.sts={endpoint}",
                "--set-json", f"deployment.extraEnvVars={json.dumps(keys)}",
                "--wait", "--timeout=3m")
    assert done.returncode == 0, done.stderr + kubectl(node_env.endpoints, "describe", "pods", "-n", NAMESPACE).stdout
    pods = json.loads(kubectl(node_env.endpoints, "get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    assert len(pods) == 2 and all(pod["status"]["phase"] == "Running" and ready(pod) for pod in pods), pods
    names = {pod["metadata"]["name"] for pod in pods}

    def holder() -> str:
        lease = json.loads(kubectl(node_env.endpoints, "get", "lease", LEASE, "-n", NAMESPACE, "-o", "json",
                                   check=False).stdout or "{}")
        return ((lease.get("spec") or {}).get("holderIdentity") or "").split("_")[0]

    assert wait_for(holder, 60, "a replica to hold the Lease") in names
    kubectl(node_env.endpoints, "apply", "-n", "default", "-f", str(REPO / "examples" / "web-1.yaml"))
    kubectl(node_env.endpoints, "wait", "-n", "default", "--for=condition=Ready", "ipb/web-1", "--timeout=90s")

    # the metrics Service answers (the API server's service proxy reaches it through its endpoints)
    metrics = kubectl(node_env.endpoints, "get", "--raw",
                      f"/api/v1/namespaces/{NAMESPACE}/services/ipo-instance-profile-operator-metrics:metrics/proxy/metrics")
    assert "leader_election_master_status" in metrics.stdout
