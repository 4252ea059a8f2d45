"""``make cluster-demo``: the operator in pods on the dev node, as a platform team installs it.

The dev environment with a node (``devenv up --node``, needs root), the image of the checkout
built and loaded into the node's runtime, ``helm install`` of the chart with two replicas, the
bindings of ``examples/`` applied and Ready; then the commands for another terminal. The node
keeps running until ``devenv down``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from . import gotools
from .__main__ import up
from .cluster import Endpoints
from .image import load
from .prerequisites import REPO, kubectl

CHART = REPO / "deploy" / "helm" / "instance-profile-operator"
NAMESPACE = "instance-profile-operator"
TEST_KEYS = [{"name": name, "value": "testing"} for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]


def install(directory: Path, reference: str) -> None:
    """``helm upgrade --install`` with two replicas, the image ``reference`` and the dev EC2 endpoint."""
    endpoints = Endpoints.load(directory)
    repository, tag = reference.rsplit(":", 1)
    endpoint = endpoints.in_cluster_ec2_endpoint_url()
    subprocess.run([str(gotools.ensure_built(gotools.HELM)), f"--kubeconfig={endpoints.kubeconfig}", "upgrade", "--install",
                    "instance-profile-operator", str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                    "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "deployment.replicas=2",
                    "--set", f"aws.region={endpoints.region}",
                    "--set", f"aws.endpoints.ec2={endpoint}", "--set", f"aws.endpoints.sts={endpoint}",
                    "--set-json", f"deployment.extraEnvVars={json.dumps(TEST_KEYS)}", "--wait", "--timeout=5m"], check=True)


def run(directory: Path) -> int:
    directory = directory.resolve()
    if up(directory, timeout=900, with_node=True) != 0:
        return 1
    reference = load(directory)
    install(directory, reference)
    endpoints = Endpoints.load(directory)
    kubectl(endpoints, "apply", "-n", "default", *(f"--filename={path}" for path in sorted(REPO.glob("examples/*.yaml"))))
    kubectl(endpoints, "wait", "-n", "default", "--for=condition=Ready", "ipb", "--all", "--timeout=180s")
    module = "instance_profile_operator.devenv"
    print(f"""
The operator runs in two pods on the dev node ({reference}); every example binding is Ready.
In another terminal:
  eval "$({sys.executable} -m {module} env --dir {directory})"
  kubectl get pods,lease -n {NAMESPACE}
  kubectl get ipb -A
  kubectl logs -n {NAMESPACE} deploy/instance-profile-operator -f
When done (removes the node and restores the host):
  {sys.executable} -m {module} down --dir {directory}""", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".devenv-node"), help="the environment's directory")
    return run(parser.parse_args(argv).dir)


if __name__ == "__main__":
    sys.exit(main())
