"""Issue 13: every AWS credential source users run the operator with, end to end.

The operator runs as its own process with one source configured and every other one removed from
its environment (botocore prefers static keys from the environment over anything else). moto
checks no credentials, so the fault proxy in front of it records who signed each request: a test
shows that a binding went Ready *with the credentials of its source*, and the proxy refuses
whatever was signed with a key after it expired.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from instance_profile_operator.devenv.cluster import free_port

from ..support.credentials import ContainerCredentials, InstanceMetadata
from ..support.kube import Bindings, manifest
from ..support.waiting import wait_for
from .test_tenancy import ROLE, policies, second_account_session, tenant  # noqa: F401 (policies: a fixture)

EC2_ACTIONS = ("DescribeIamInstanceProfileAssociations", "DescribeInstances", "AssociateIamInstanceProfile",
               "ReplaceIamInstanceProfileAssociation", "DisassociateIamInstanceProfile")
OPERATOR_ROLE = "arn:aws:iam::123456789012:role/instance-profile-operator"  # moto's default account: the tests' EC2
SOURCES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
           "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
           "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_EC2_METADATA_SERVICE_ENDPOINT")


def only(**source: str | None) -> dict[str, str | None]:
    """The operator's environment overrides: no credential source but ``source``."""
    return {**dict.fromkeys(SOURCES), "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true", **source}


def irsa(tmp_path: Path, token_file: Path | None = None) -> dict[str, str | None]:
    """What EKS puts in a pod whose ServiceAccount has the role-arn annotation."""
    if token_file is None:
        token_file = tmp_path / "eks.amazonaws.com" / "serviceaccount" / "token"
        token_file.parent.mkdir(parents=True)
        token_file.write_text("eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.signature")
    return only(AWS_ROLE_ARN=OPERATOR_ROLE, AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file))


@pytest.fixture
def pod_identity(proxy) -> Iterator[ContainerCredentials]:
    endpoint = ContainerCredentials("pod-identity-token", expire=proxy.expire).start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def imds(proxy) -> Iterator[InstanceMetadata]:
    endpoint = InstanceMetadata(expire=proxy.expire).start()
    yield endpoint
    endpoint.stop()


def ready(bindings: Bindings, name: str, instance_id: str) -> None:
    bindings.create(manifest(name, instance_id))
    wait_for(lambda: bindings.is_ready(name), 30, f"{name} Ready")


# -- each source, end to end ----------------------------------------------------------------------


def test_irsa(start_operator, proxy, bindings: Bindings, new_instance, tmp_path):
    start_operator(**irsa(tmp_path))
    ready(bindings, "irsa", new_instance())
    assert proxy.calls["AssumeRoleWithWebIdentity"] >= 1
    issued = set(proxy.issued["AssumeRoleWithWebIdentity"])
    assert issued and proxy.signers(*EC2_ACTIONS) <= issued  # every EC2 call signed with IRSA's credentials


def test_irsa_then_a_policys_role_with_credentials_that_expire_within_the_test(
        api_client, start_operator, proxy, policies, devenv, tmp_path):  # noqa: F811 (the fixture imported above)
    lifetime = 5.0
    proxy.short_lived_sts(lifetime)  # what STS hands out expires within seconds: refreshed at every use
    other = second_account_session(devenv)
    other_ec2 = other.client("ec2", endpoint_url=devenv.ec2_endpoint_url)
    other_iam = other.client("iam", endpoint_url=devenv.ec2_endpoint_url)
    if not any(p["InstanceProfileName"] == "web-server" for p in other_iam.list_instance_profiles()["InstanceProfiles"]):
        other_iam.create_instance_profile(InstanceProfileName="web-server")

    def launch() -> str:
        return other_ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]

    team = tenant(api_client, "irsa")
    policies({"namespaceSelector": {"matchLabels": {"team": "irsa"}}, "instanceProfiles": [{"name": "web-server"}],
              "account": {"roleArn": ROLE, "externalId": "irsa-external-id"}})
    start_operator(namespaces=[team.namespace], **irsa(tmp_path))
    ready(team, "first", launch())
    assert team.status("first")["roleArn"] == ROLE
    assert proxy.signers("AssumeRole") <= set(proxy.issued["AssumeRoleWithWebIdentity"])  # the role assumed with IRSA's
    assert proxy.signers(*EC2_ACTIONS) <= set(proxy.issued["AssumeRole"])  # EC2 called with the role's

    expired_after = time.time() + lifetime
    wait_for(lambda: time.time() > expired_after, lifetime + 5, "every credential issued so far to expire")
    proxy.reset_counts()
    ready(team, "second", launch())  # converges after the first credentials expired
    assert proxy.expired_refused == 0  # nothing was ever signed with an expired key
    assert proxy.issued["AssumeRoleWithWebIdentity"] and proxy.issued["AssumeRole"]  # new ones, issued since
    assert proxy.signers("AssumeRole") <= set(proxy.issued["AssumeRoleWithWebIdentity"])
    assert proxy.signers(*EC2_ACTIONS) <= set(proxy.issued["AssumeRole"])


def test_pod_identity(start_operator, proxy, bindings: Bindings, new_instance, pod_identity, tmp_path):
    token = tmp_path / "eks-pod-identity-token"
    token.write_text(pod_identity.token)
    start_operator(**only(AWS_CONTAINER_CREDENTIALS_FULL_URI=f"{pod_identity.url}/v1/credentials",
                          AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token)))
    ready(bindings, "pod-identity", new_instance())
    assert pod_identity.issued and pod_identity.refused == 0  # asked with the pod's token, every time
    assert proxy.signers(*EC2_ACTIONS) <= set(pod_identity.issued)


def test_instance_metadata_v2(start_operator, proxy, bindings: Bindings, new_instance, imds):
    start_operator(**only(AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=f"{imds.url}/"))
    ready(bindings, "instance-role", new_instance())
    assert imds.tokens_handed_out >= 1 and imds.refused == 0  # IMDSv2: a session token first, then only with it
    assert imds.issued and proxy.signers(*EC2_ACTIONS) <= set(imds.issued)


def test_a_profile_with_role_arn_and_source_profile(start_operator, proxy, bindings: Bindings, new_instance, tmp_path):
    config, credentials = tmp_path / "config", tmp_path / "credentials"
    config.write_text(f"[profile ops]\nrole_arn = {OPERATOR_ROLE}\nsource_profile = base\nrole_session_name = ops\n")
    credentials.write_text("[base]\naws_access_key_id = AKIASOURCEPROFILE000\naws_secret_access_key = base-secret\n")
    start_operator(**only(AWS_PROFILE="ops", AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=str(credentials)))
    ready(bindings, "profile", new_instance())
    assert proxy.signers("AssumeRole") == {"AKIASOURCEPROFILE000"}
    assert proxy.issued["AssumeRole"] and proxy.signers(*EC2_ACTIONS) <= set(proxy.issued["AssumeRole"])


def test_credential_process(start_operator, proxy, bindings: Bindings, new_instance, tmp_path):
    script = tmp_path / "credentials.py"
    script.write_text("import json\nprint(json.dumps({'Version': 1, 'AccessKeyId': 'AKIACREDENTIALPROC0',"
                      " 'SecretAccessKey': 'process-secret'}))\n")
    config = tmp_path / "config"
    config.write_text(f"[profile process]\ncredential_process = {sys.executable} {script}\n")
    start_operator(**only(AWS_PROFILE="process", AWS_CONFIG_FILE=str(config)))
    ready(bindings, "process", new_instance())
    assert proxy.signers(*EC2_ACTIONS) == {"AKIACREDENTIALPROC0"}


def test_static_keys_from_the_environment(start_operator, proxy, bindings: Bindings, new_instance):
    start_operator(**only(AWS_ACCESS_KEY_ID="AKIASTATICENVKEYS00", AWS_SECRET_ACCESS_KEY="static-secret"))
    ready(bindings, "static", new_instance())
    assert proxy.signers(*EC2_ACTIONS) == {"AKIASTATICENVKEYS00"}


# -- each failure: CredentialsUnavailable, Stalled, one Event, one log line per retry ---------------


def failure_setup(case: str, tmp_path: Path, proxy, pod_identity: ContainerCredentials) -> dict[str, str | None]:
    if case == "irsa-token-file-missing":
        return irsa(tmp_path, token_file=tmp_path / "not-mounted" / "token")
    if case == "irsa-token-refused":
        proxy.fail("AssumeRoleWithWebIdentity", "InvalidIdentityToken",
                   "Couldn't retrieve verification key from your identity provider", status=400, times=None)
        return irsa(tmp_path)
    if case == "irsa-role-not-trusting":
        proxy.fail("AssumeRoleWithWebIdentity", "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity",
                   status=403, times=None)
        return irsa(tmp_path)
    if case.startswith("pod-identity"):
        token = tmp_path / "eks-pod-identity-token"
        token.write_text("a token of another pod")
        endpoint = pod_identity.url if case == "pod-identity-refusing" else f"http://127.0.0.1:{free_port()}"
        return only(AWS_CONTAINER_CREDENTIALS_FULL_URI=f"{endpoint}/v1/credentials",
                    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token))
    assert case == "instance-metadata-unreachable"
    return only(AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=f"http://127.0.0.1:{free_port()}/")


FAILURES = {
    "irsa-token-file-missing": ("FileNotFoundError", "IRSA (the role AWS_ROLE_ARN, assumed with the token file "
                                "AWS_WEB_IDENTITY_TOKEN_FILE) failed: [Errno 2] No such file or directory", "that the token file is mounted"),
    "irsa-token-refused": ("InvalidIdentityToken", "IRSA (", "Couldn't retrieve verification key from your identity provider"),
    "irsa-role-not-trusting": ("AccessDenied", "IRSA (", "the role's trust policy allows the cluster's OIDC provider"),
    "pod-identity-refusing": ("CredentialRetrievalError", "EKS Pod Identity (the container credentials endpoint", "eks-pod-identity-agent"),
    "pod-identity-unreachable": ("CredentialRetrievalError", "EKS Pod Identity (", "pod identity association"),
    "instance-metadata-unreachable": ("NoCredentialsError", "Unable to locate credentials", "EC2 instance metadata, and found none"),
}
ATTEMPT = re.compile(r": (?P<reason>.+) \(attempt (?P<attempt>[0-9]+), retrying in (?P<delay>[0-9.]+) s\)$")


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_credentials_failure_is_a_stalled_set_up_error_naming_its_source(
        case, start_operator, proxy, bindings: Bindings, new_instance, pod_identity, tmp_path):
    code, source, check = FAILURES[case]
    operator = start_operator(**failure_setup(case, tmp_path, proxy, pod_identity))
    bindings.create(manifest("unusable", new_instance()))
    stalled = wait_for(lambda: bindings.condition("unusable", "Stalled"), 30, "Stalled")
    ready = bindings.condition("unusable")
    assert stalled["status"] == "True" and stalled["reason"] == ready["reason"] == "CredentialsUnavailable"
    assert ready["status"] == "False" and ready["message"].startswith(f"{code}: ") and source in ready["message"]
    assert check in ready["message"]
    assert not bindings.condition("unusable", "Reconciling")

    ref = f"{bindings.namespace}/unusable: "
    event = f"{ref}CredentialsUnavailable: "  # the Event, logged when it is posted; its repeats are only counted
    lines = lambda: [line for line in operator.log().splitlines() if ref in line and event not in line]  # noqa: E731
    wait_for(lambda: len(lines()) >= 4, 30, "four attempts")
    assert operator.log().count(event) == 1
    retries = [ATTEMPT.search(line) for line in lines()]
    assert all(retries), lines()  # every other line about it is a retry's, and one line per retry
    assert [int(r["attempt"]) for r in retries] == list(range(1, len(retries) + 1))
    assert max(float(r["delay"]) for r in retries) <= 2.0  # capped (IPO_RETRY_MAX_SECONDS in tests)
    assert "Traceback" not in operator.log()
    assert [e.reason for e in bindings.events("unusable")] == ["CredentialsUnavailable"]  # one Event, counted again
    assert operator.process.poll() is None
    if case == "pod-identity-refusing":
        assert pod_identity.refused >= 1 and not pod_identity.issued
