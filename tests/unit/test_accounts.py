"""The account provider: session names, where credentials come from, how their failures read, regions."""

from __future__ import annotations

import ast
import inspect
import logging
import re
import sys
from datetime import datetime, timedelta, timezone

import boto3
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.tokens
import pytest
from hypothesis import given
from hypothesis import strategies as st

from instance_profile_operator.aws.accounts import (
    Accounts, RefreshFailureLog, assume_fault, credentials_fault, failing_provider, session_name,
)
from instance_profile_operator.aws.apimodel import TrimmedLoader
from instance_profile_operator.devenv.cluster import free_port
from instance_profile_operator.core.faults import WITHHELD, AwsFault, FaultKind
from instance_profile_operator.core.model import Account

ROLE = "arn:aws:iam::222233334444:role/instance-profile-operator"


@pytest.mark.parametrize("identity,expected", [
    ("instance-profile-operator", "instance-profile-operator-instance-profile-operator"),
    ("", "instance-profile-operator"),
    ("ip-10-0-0-1.ec2.internal", "instance-profile-operator-ip-10-0-0-1.ec2.internal"),
    ("my host/with:odd chars", "instance-profile-operator-my-host-with-odd-chars"),
])
def test_session_name(identity, expected):
    assert session_name(identity) == expected


@given(st.text())
def test_session_name_is_always_acceptable_to_sts(identity):
    name = session_name(identity)
    assert re.fullmatch(r"[\w+=,.@-]{2,64}", name, re.ASCII) and name.startswith("instance-profile-operator")


@pytest.mark.parametrize("code,status,kind", [
    ("AccessDenied", 403, FaultKind.ACCESS_DENIED),
    ("InvalidClientTokenId", 403, FaultKind.ACCESS_DENIED),
    ("ValidationError", 400, FaultKind.ACCESS_DENIED),  # a malformed roleArn or externalId: the user must fix it
    ("RegionDisabledException", 403, FaultKind.ACCESS_DENIED),
    ("Throttling", 400, FaultKind.THROTTLED),
    ("InternalFailure", 500, FaultKind.UNAVAILABLE),
    ("SomethingNew", 503, FaultKind.UNAVAILABLE),
])
def test_assume_fault(code, status, kind):
    fault = assume_fault(ROLE, code, "User: x is not authorized to perform: sts:AssumeRole", status)
    assert fault.kind is kind and fault.code == code
    assert str(fault) == f"{code}: cannot assume role <role>: User: x is not authorized to perform: sts:AssumeRole{WITHHELD}"
    assert fault.detail == f"cannot assume role {ROLE}: User: x is not authorized to perform: sts:AssumeRole"  # for the log


def test_accounts_share_one_api_model_loader():
    accounts = Accounts(base=boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"))
    loaders = {id(accounts.session(Account(arn))._session.get_component("data_loader"))
               for arn in ("", "arn:aws:iam::111111111111:role/a", "arn:aws:iam::222222222222:role/b")}
    assert len(loaders) == 1


# -- botocore's credential providers keep botocore's whole models ---------------------------------


def provider_calls() -> tuple[set[str], set[str]]:
    """The services botocore's credential and token providers make clients of, and the client
    methods they call, read from botocore's own source: a provider added later is found too."""
    services: set[str] = set()
    methods: set[str] = set()
    for module in (botocore.credentials, botocore.tokens):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not isinstance(node, ast.Call):
                continue
            called = node.func
            name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
            if name.endswith("client_creator") or name == "create_nested_client":
                services.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
            elif isinstance(called, ast.Attribute) and (
                    (isinstance(called.value, ast.Name) and called.value.id == "client")
                    or (isinstance(called.value, ast.Attribute) and called.value.attr == "_client")):
                methods.add(called.attr)
    return services, methods


def test_every_operation_botocores_credential_providers_call_can_be_made():
    services, methods = provider_calls()
    assert {"sts", "sso", "sso-oidc"} <= services  # the scan reads what it should
    assert {"assume_role", "assume_role_with_web_identity", "get_role_credentials", "create_token"} <= methods
    accounts = Accounts(base=boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"))
    accounts.session(Account()).client("ec2", region_name="us-east-1")  # the operator's own clients first
    accounts.session(Account()).client("sts", region_name="us-east-1")
    clients = [accounts.credentials_session.create_client(service, region_name="us-east-1", aws_access_key_id="x",
                                                          aws_secret_access_key="x")
               for service in services]  # as the providers make theirs: from the credentials session
    missing = {method for method in methods if not any(hasattr(client, method) for client in clients)}  # aliases too
    assert not missing


def test_only_the_operators_own_clients_are_trimmed():
    accounts = Accounts(base=boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"))
    ec2 = accounts.client(Account(), "ec2", "us-east-1", botocore.config.Config())
    assert isinstance(accounts.session(Account())._session.get_component("data_loader"), TrimmedLoader)
    assert not isinstance(accounts.credentials_session.get_component("data_loader"), TrimmedLoader)
    assert len(ec2.meta.service_model.operation_names) == 5


# -- credential failures name their source --------------------------------------------------------

CLEAN = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}
SOURCES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN",
           "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
           "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_ENDPOINT_URL")


@pytest.fixture
def environment(monkeypatch):
    """Only what a test sets: no credentials of the machine's."""
    for name in SOURCES:
        monkeypatch.delenv(name, raising=False)
    for name, value in CLEAN.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def own_credentials_failure() -> AwsFault:
    with pytest.raises(AwsFault) as raised:
        Accounts(region="us-east-1").credentials(Account())
    return raised.value


def test_no_credentials_at_all(environment):
    failure = own_credentials_failure()
    assert failure.kind is FaultKind.CREDENTIALS_UNAVAILABLE and failure.code == "NoCredentialsError"
    assert failure.message.startswith("Unable to locate credentials; the operator has no usable AWS credentials")


def test_irsa_without_its_token_file(environment, tmp_path):
    environment.setenv("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/instance-profile-operator")
    environment.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "missing"))
    failure = own_credentials_failure()
    assert failure.kind is FaultKind.CREDENTIALS_UNAVAILABLE and failure.code == "FileNotFoundError"
    assert failure.message.startswith("IRSA (the role AWS_ROLE_ARN, assumed with the token file AWS_WEB_IDENTITY_TOKEN_FILE) failed: ")
    assert str(tmp_path / "missing") in failure.message and "eks.amazonaws.com/role-arn" in failure.message


def test_a_pod_identity_endpoint_that_does_not_answer(environment):
    environment.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{free_port()}/v1/credentials")
    failure = own_credentials_failure()
    assert failure.kind is FaultKind.CREDENTIALS_UNAVAILABLE and failure.code == "CredentialRetrievalError"
    assert failure.message.startswith("EKS Pod Identity (the container credentials endpoint AWS_CONTAINER_CREDENTIALS_FULL_URI) failed: ")


def test_a_credential_process_that_fails(environment, tmp_path):
    config = tmp_path / "config"
    config.write_text("[profile ops]\ncredential_process = sh -c 'echo no >&2; exit 3'\n")
    environment.setenv("AWS_CONFIG_FILE", str(config))
    environment.setenv("AWS_PROFILE", "ops")
    failure = own_credentials_failure()
    assert failure.kind is FaultKind.CREDENTIALS_UNAVAILABLE
    assert failure.message.startswith("the credential_process of the shared config profile (AWS_PROFILE) failed: ")


def test_partial_static_keys(environment):
    environment.setenv("AWS_ACCESS_KEY_ID", "AKIDONLY")
    failure = own_credentials_failure()
    assert failure.code == "PartialCredentialsError" and failure.message.startswith("static keys from the environment")


def test_a_role_is_assumed_with_the_external_id_of_its_account(environment):
    environment.setenv("AWS_ACCESS_KEY_ID", "AKIDOPERATOR")
    environment.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    accounts = Accounts(region="us-east-1")
    asked: list[dict] = []

    class Sts:
        def assume_role(self, **params):
            asked.append(params)
            return {"Credentials": {"AccessKeyId": f"AKID{len(asked)}", "SecretAccessKey": "s", "SessionToken": "t",
                                    "Expiration": datetime.now(timezone.utc) + timedelta(hours=1)}}

    accounts._sts = Sts()
    first, rotated = Account(ROLE, "one"), Account(ROLE, "two")
    assert accounts.credentials(first).access_key == "AKID1"
    assert accounts.credentials(rotated).access_key == "AKID2"  # a new external ID: new credentials, no restart
    assert [p.get("ExternalId") for p in asked] == ["one", "two"]
    accounts.retain({rotated})
    assert accounts.credentials(rotated).access_key == "AKID2" and len(asked) == 2  # kept: still cached


def test_a_role_cannot_be_assumed_without_the_operators_own_credentials(environment):
    failure = None
    with pytest.raises(AwsFault) as raised:
        Accounts(region="us-east-1").credentials(Account(ROLE, "x"))
    failure = raised.value
    assert failure.kind is FaultKind.CREDENTIALS_UNAVAILABLE and "Unable to locate credentials" in failure.message


def test_a_throttled_sts_is_retried_not_a_set_up_error():
    error = botocore.exceptions.ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                                             "ResponseMetadata": {"HTTPStatusCode": 400}}, "AssumeRoleWithWebIdentity")
    assert credentials_fault("assume-role-with-web-identity", error).kind is FaultKind.THROTTLED
    refused = botocore.exceptions.ClientError({"Error": {"Code": "InvalidIdentityToken", "Message": "bad token"},
                                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "AssumeRoleWithWebIdentity")
    fault = credentials_fault("assume-role-with-web-identity", refused)
    assert fault.kind is FaultKind.CREDENTIALS_UNAVAILABLE and fault.message.startswith("IRSA") and "bad token" in fault.message


def test_failing_provider_names_the_outermost_provider():
    class Inner(botocore.credentials.CredentialProvider):
        METHOD = "inner"

        def load(self):
            raise ValueError("no")

    class Outer(botocore.credentials.CredentialProvider):
        METHOD = "outer"

        def load(self):
            return Inner().load()

    with pytest.raises(ValueError) as raised:
        botocore.credentials.CredentialResolver([Outer()]).load_credentials()
    assert failing_provider(raised.value) == "outer"
    assert failing_provider(ValueError("raised elsewhere")) is None


@pytest.mark.parametrize(("message", "kept", "shown"), [
    ("Refreshing temporary credentials failed during mandatory refresh period.", False, None),
    ("Refreshing temporary credentials failed during advisory refresh period.", True,
     "Refreshing temporary credentials failed during advisory refresh period. Keeping the current credentials: "
     "OSError: endpoint down"),
])
def test_botocores_refresh_failures_log_without_a_traceback(message, kept, shown):
    try:
        raise OSError("endpoint down")
    except OSError:
        record = logging.LogRecord("botocore.credentials", logging.WARNING, __file__, 1, message, (), sys.exc_info())
    assert RefreshFailureLog().filter(record) is kept
    if kept:
        assert record.getMessage() == shown and record.exc_info is None


def test_other_records_pass_unchanged():
    record = logging.LogRecord("botocore.credentials", logging.INFO, __file__, 1, "Found credentials in %s", ("env",), None)
    assert RefreshFailureLog().filter(record) and record.getMessage() == "Found credentials in env"


# -- regions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("operator_region", "account", "region", "known"), [
    ("us-east-1", Account(), "eu-west-1", True),
    ("us-east-1", Account(), "us-east-9", False),
    ("us-east-1", Account(), "cn-north-1", False),  # another partition than the operator's own credentials'
    ("cn-north-1", Account(), "cn-northwest-1", True),
    ("us-east-1", Account("arn:aws-cn:iam::111122223333:role/r"), "cn-north-1", True),
    ("us-east-1", Account("arn:aws-us-gov:iam::111122223333:role/r"), "us-east-1", False),
])
def test_a_region_the_partition_does_not_have_is_refused(operator_region, account, region, known):
    accounts = Accounts(base=boto3.Session(region_name=operator_region, aws_access_key_id="x", aws_secret_access_key="x"))
    if known:
        accounts.check_region(account, region)
        return
    with pytest.raises(AwsFault) as raised:
        accounts.client(account, "ec2", region, botocore.config.Config())
    assert raised.value.kind is FaultKind.UNKNOWN_REGION and f"region {region} is not a region of the AWS partition" in str(raised.value)
    assert not accounts._sessions  # no client, no session made
