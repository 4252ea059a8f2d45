"""The pure parts of the account provider: session names and AssumeRole failures."""

from __future__ import annotations

import re

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from instance_profile_operator.accounts import Accounts, assume_fault, session_name
from instance_profile_operator.faults import WITHHELD, FaultKind
from instance_profile_operator.model import Account

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
