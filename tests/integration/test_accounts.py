"""Accounts against moto's server: an assumed role acts in the role's account, and only there."""

from __future__ import annotations

import boto3
import pytest

from instance_profile_operator.aws.accounts import Accounts
from instance_profile_operator.aws.ec2 import Ec2Gateway
from instance_profile_operator.core.faults import AwsFault, FaultKind
from instance_profile_operator.core.policy import OWN_ACCOUNT, Account

OTHER_ACCOUNT = "222233334444"
OTHER = Account(f"arn:aws:iam::{OTHER_ACCOUNT}:role/instance-profile-operator", "team-b-external-id")
AMI = "ami-0abcdef1234567890"


@pytest.fixture
def accounts(devenv, monkeypatch) -> Accounts:
    """Configured like the operator: from the environment, AWS_ENDPOINT_URL pointing at moto."""
    for key, value in devenv.aws_variables().items():
        monkeypatch.setenv(key, value)
    return Accounts(region=devenv.region, role_session_name="instance-profile-operator-test")


def whole(session: boto3.Session) -> boto3.Session:
    """The same identity with botocore's whole API models: the operator's sessions know only
    the operations it calls (apimodel.py), and tests launch instances and ask STS who they are."""
    credentials = session.get_credentials().get_frozen_credentials()
    return boto3.Session(aws_access_key_id=credentials.access_key, aws_secret_access_key=credentials.secret_key,
                         aws_session_token=credentials.token, region_name=session.region_name)


def launch(session) -> str:
    return whole(session).client("ec2").run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]


def visible(session, instance_id: str) -> bool:
    reservations = session.client("ec2").describe_instances(Filters=[{"Name": "instance-id", "Values": [instance_id]}])["Reservations"]
    return any(i["InstanceId"] == instance_id for r in reservations for i in r["Instances"])


def test_assumed_role_acts_in_the_roles_account(accounts: Accounts):
    own, other = accounts.session(OWN_ACCOUNT), accounts.session(OTHER)
    assert whole(other).client("sts").get_caller_identity()["Arn"] == (
        f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/instance-profile-operator/instance-profile-operator-test")
    assert whole(own).client("sts").get_caller_identity()["Account"] != OTHER_ACCOUNT

    in_other, in_own = launch(other), launch(own)
    assert visible(other, in_other) and not visible(own, in_other)
    assert visible(own, in_own) and not visible(other, in_own)


def test_profiles_of_the_other_account_are_associated_there(accounts: Accounts):
    other = accounts.session(OTHER)
    iam, ec2 = whole(other).client("iam"), other.client("ec2")
    try:
        arn = iam.create_instance_profile(InstanceProfileName="team-b-web")["InstanceProfile"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        arn = iam.get_instance_profile(InstanceProfileName="team-b-web")["InstanceProfile"]["Arn"]
    assert f":{OTHER_ACCOUNT}:" in arn
    instance_id = launch(other)
    association = ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Name": "team-b-web"})
    assert association["IamInstanceProfileAssociation"]["IamInstanceProfile"]["Arn"] == arn


def test_sessions_and_credentials_are_cached(accounts: Accounts):
    session = accounts.session(OTHER)
    assert accounts.session(OTHER) is session
    assert accounts.session(Account(OTHER.role_arn)) is not session  # another external ID is another identity
    first = session.get_credentials().get_frozen_credentials()
    assert session.get_credentials().get_frozen_credentials().access_key == first.access_key


def test_credentials_are_refreshed_before_they_expire(devenv, monkeypatch):
    for key, value in devenv.aws_variables().items():
        monkeypatch.setenv(key, value)
    # 15 minutes is STS's minimum and botocore's advisory refresh window: every use refreshes
    session = Accounts(region=devenv.region, duration_seconds=900).session(OTHER)
    first = session.get_credentials().get_frozen_credentials()
    second = session.get_credentials().get_frozen_credentials()
    assert second.access_key != first.access_key
    assert visible(session, launch(session))  # and the refreshed credentials work


def test_a_failure_to_assume_is_a_classified_fault(devenv, monkeypatch):
    for key, value in devenv.aws_variables().items():
        monkeypatch.setenv(key, value)
    session = Accounts(region=devenv.region, role_session_name="x" * 65).session(OTHER)  # STS takes at most 64
    with pytest.raises(AwsFault) as caught:
        session.client("ec2").describe_instances()
    assert caught.value.kind is FaultKind.ACCESS_DENIED and caught.value.code == "ValidationError"
    assert caught.value.message.startswith("cannot assume role <role>: ") and "64" in caught.value.message
    assert f"cannot assume role {OTHER.role_arn}: " in caught.value.detail  # for the operator's log


async def test_the_ec2_gateway_reports_the_assume_fault_unchanged(devenv, monkeypatch):
    for key, value in devenv.aws_variables().items():
        monkeypatch.setenv(key, value)
    gateway = Ec2Gateway(session=Accounts(region=devenv.region, role_session_name="x" * 65).session(OTHER))
    try:
        with pytest.raises(AwsFault) as caught:
            await gateway.describe_instances(devenv.region, ["i-0123456789abcdef0"])
    finally:
        gateway.close()
    assert caught.value.kind is FaultKind.ACCESS_DENIED and "cannot assume role" in caught.value.message
