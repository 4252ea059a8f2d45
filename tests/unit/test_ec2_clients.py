"""The gateway's clients: per account (role and external ID) and region, released when nobody
names their place, never made for a region that does not exist."""

from __future__ import annotations

import asyncio
import logging

import boto3
import pytest

from instance_profile_operator.aws.ec2 import Ec2Gateway
from instance_profile_operator.core.faults import AwsFault, FaultKind, classify
from instance_profile_operator.core.model import OWN_ACCOUNT, Account
from instance_profile_operator.aws.ratelimit import Limit, RateLimiter

ROLE = "arn:aws:iam::222233334444:role/ops"
DESCRIBED = {"IamInstanceProfileAssociations": []}


class Gateway(Ec2Gateway):
    """Makes clients without credentials and answers from a script."""

    def __init__(self, account_of=lambda role_arn: Account(role_arn), answers=None):
        super().__init__(session=boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"),
                         account_of=account_of, limiter=RateLimiter())
        self.answers = answers or []

    def _client(self, account, region):
        return self._clients.setdefault((account, region), f"client of {account.key or 'own'} in {region}")

    def _invoke(self, account, region, operation, params):
        answer = self.answers.pop(0) if self.answers else DESCRIBED
        if isinstance(answer, Exception):
            raise answer
        return answer


async def describe(gateway: Ec2Gateway, region: str, account: str = "") -> None:
    await gateway.describe_associations(region, ["i-1"], account=account)


def places(limiter: RateLimiter) -> set[tuple[str, str]]:
    return {key[:2] for key in limiter._lanes}


async def test_clients_and_buckets_nobody_names_are_released():
    gateway = Gateway()
    for region, account in (("us-east-1", ""), ("eu-west-1", ""), ("us-east-1", ROLE)):
        await describe(gateway, region, account)
    gateway.retain({("", "us-east-1"), (ROLE, "us-east-1")})
    assert set(gateway._clients) == {(OWN_ACCOUNT, "us-east-1"), (Account(ROLE), "us-east-1")}
    assert places(gateway.limiter) == {("", "us-east-1"), (ROLE, "us-east-1")}
    gateway.retain(set())
    assert gateway._clients == {} and places(gateway.limiter) == set()
    await describe(gateway, "eu-west-1")  # named again: made again
    assert set(gateway._clients) == {(OWN_ACCOUNT, "eu-west-1")}
    gateway.close()


async def test_a_new_external_id_gets_a_new_client_and_the_old_one_goes():
    external_ids = {ROLE: "one"}
    gateway = Gateway(account_of=lambda role_arn: Account(role_arn, external_ids[role_arn]))
    await describe(gateway, "us-east-1", ROLE)
    external_ids[ROLE] = "two"
    await describe(gateway, "us-east-1", ROLE)
    assert set(gateway._clients) == {(Account(ROLE, "one"), "us-east-1"), (Account(ROLE, "two"), "us-east-1")}
    gateway.retain({(ROLE, "us-east-1")})
    assert set(gateway._clients) == {(Account(ROLE, "two"), "us-east-1")}
    gateway.close()


async def test_a_region_the_partition_does_not_have_gets_no_client_and_no_token():
    gateway = Ec2Gateway(session=boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"))
    with pytest.raises(AwsFault) as raised:
        await describe(gateway, "us-east-9")
    assert raised.value.kind is FaultKind.UNKNOWN_REGION
    assert gateway._clients == {} and places(gateway.limiter) == set() and gateway.calls == {}
    gateway.close()


async def test_what_status_withholds_goes_to_the_log_in_full(caplog):
    operator = "arn:aws:sts::111122223333:assumed-role/ops/instance-profile-operator"
    denied = classify("UnauthorizedOperation", f"User: {operator} is not authorized. Encoded authorization failure message: XyZ", 403)
    gateway = Gateway(answers=[denied, classify("UnauthorizedOperation", "You are not authorized.", 403)])
    with caplog.at_level(logging.WARNING, "instance_profile_operator.aws.ec2"):
        for _ in range(2):
            with pytest.raises(AwsFault) as raised:
                await describe(gateway, "us-east-1")
    assert operator not in str(raised.value)
    [logged] = caplog.messages  # the second fault withheld nothing: nothing more to log
    assert operator in logged and "XyZ" in logged and "describe_iam_instance_profile_associations in us-east-1" in logged
    gateway.close()


async def test_a_bucket_someone_waits_on_is_kept():
    limiter = RateLimiter({"DescribeInstances": Limit(1, 0.001)})
    await limiter.acquire("", "eu-west-1", "DescribeInstances")  # the only token
    waiting = asyncio.ensure_future(limiter.acquire("", "eu-west-1", "DescribeInstances"))
    await asyncio.sleep(0)  # it reached its wait (a yield, not a timing assumption)
    limiter.retain(set())
    assert places(limiter) == {("", "eu-west-1")}
    waiting.cancel()
