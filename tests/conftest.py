"""Session fixtures: one real control plane and EC2 endpoint for every test above unit level.

They start lazily: ``pytest tests/unit`` never starts a server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import boto3
import kubernetes
import pytest

from instance_profile_operator.devenv.cluster import DevEnv, Endpoints

from .support.kube import ALLOW_TESTS, REPO, Bindings, create_namespace, kubectl
from .support.waiting import wait_for


@pytest.fixture(scope="session")
def devenv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    env = DevEnv(tmp_path_factory.mktemp("devenv"))
    yield env.start()
    env.stop()


@pytest.fixture(scope="session")
def api_client(devenv: Endpoints) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=devenv.kubeconfig)


@pytest.fixture(scope="session")
def crd(devenv: Endpoints) -> None:
    """The CRD from crds/, installed with kubectl and Established."""
    kubectl(devenv, "apply", "-f", str(REPO / "crds"))
    kubectl(devenv, "wait", "--for=condition=Established", "--timeout=30s",
            "crd/instanceprofilebindings.ec2.instanceprofiles.dev")
    wait_for(lambda: kubectl(devenv, "explain", "ipb.spec", check=False).returncode == 0, what="the CRD's OpenAPI")
    kubectl(devenv, "wait", "--for=condition=Established", "--timeout=30s", "crd/instanceprofilepolicies.ec2.instanceprofiles.dev")
    kubectl(devenv, "wait", "--for=condition=Established", "--timeout=30s", "crd/instanceprofilebindingsets.ec2.instanceprofiles.dev")
    kubectl(devenv, "apply", "-f", "-", input=json.dumps(ALLOW_TESTS))


@pytest.fixture
def namespace(api_client: kubernetes.client.ApiClient, crd: None) -> str:
    return create_namespace(api_client)


@pytest.fixture
def bindings(api_client: kubernetes.client.ApiClient, namespace: str) -> Bindings:
    return Bindings(api_client, namespace)


@pytest.fixture(scope="session")
def aws_session(devenv: Endpoints) -> boto3.Session:
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=devenv.region)


@pytest.fixture(scope="session")
def ec2(devenv: Endpoints, aws_session: boto3.Session):
    """A boto3 client straight to moto: how tests check EC2 and act 'outside Kubernetes'."""
    return aws_session.client("ec2", endpoint_url=devenv.ec2_endpoint_url)


@pytest.fixture(scope="session")
def iam(devenv: Endpoints, aws_session: boto3.Session):
    client = aws_session.client("iam", endpoint_url=devenv.ec2_endpoint_url)
    for name in ("web-server", "batch-worker"):
        try:
            client.create_instance_profile(InstanceProfileName=name)
        except client.exceptions.EntityAlreadyExistsException:
            pass
    return client


@pytest.fixture
def new_instance(ec2, iam):
    """Factory: launch a fresh instance (running unless told otherwise), return its ID."""

    def launch(state: str = "running") -> str:
        instance_id = ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        if state == "stopped":
            ec2.stop_instances(InstanceIds=[instance_id])
        elif state == "terminated":
            ec2.terminate_instances(InstanceIds=[instance_id])
        return instance_id

    return launch


@pytest.fixture(scope="session")
def operator_kubeconfig(devenv: Endpoints, crd: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kubeconfig with a token of the ServiceAccount from deploy/: the operator runs with
    exactly the RBAC it ships with."""
    kubectl(devenv, "apply", "-f", str(REPO / "deploy" / "namespace.yaml"), "-f", str(REPO / "deploy" / "rbac.yaml"))
    token = wait_for(
        lambda: kubectl(devenv, "create", "token", "instance-profile-operator", "-n", "instance-profile-operator",
                        "--duration=24h", check=False).stdout.strip(),
        what="a ServiceAccount token",
    )
    config = json.loads(Path(devenv.kubeconfig).read_text())
    config["users"] = [{"name": "devenv-admin", "user": {"token": token}}]
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    path.write_text(json.dumps(config))
    return str(path)
