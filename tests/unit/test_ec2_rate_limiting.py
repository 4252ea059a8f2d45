"""The gateway takes a token per request, retries refusals through the limiter, not botocore."""

from __future__ import annotations

import asyncio
import threading

import boto3
import pytest

from instance_profile_operator.aws import ec2
from instance_profile_operator.aws.ec2 import Ec2Gateway
from instance_profile_operator.core.faults import AwsFault, FaultKind
from instance_profile_operator.core.model import OWN_ACCOUNT, ProfileRef
from instance_profile_operator.aws.ratelimit import DECREASE, Limit, RateLimiter

THROTTLED = AwsFault(FaultKind.THROTTLED, "RequestLimitExceeded", "Request limit exceeded.")
UNAVAILABLE = AwsFault(FaultKind.UNAVAILABLE, "InternalError", "")
DENIED = AwsFault(FaultKind.ACCESS_DENIED, "UnauthorizedOperation", "")
TIMEOUT = 5.0  # real seconds: reached only when a test fails
ASSOCIATED = {"IamInstanceProfileAssociation": {
    "AssociationId": "iip-assoc-1", "InstanceId": "i-1", "State": "associated",
    "IamInstanceProfile": {"Arn": "arn:aws:iam::123456789012:instance-profile/web", "Id": "AIPA1"},
}}


class ScriptedGateway(Ec2Gateway):
    """Answers requests from a script instead of EC2; records what was sent."""

    def __init__(self, answers: list, max_attempts: int = 5, limiter: RateLimiter | None = None, max_concurrency: int = 1):
        super().__init__(max_concurrency=max_concurrency, max_attempts=max_attempts,
                         session=boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"),
                         limiter=limiter or RateLimiter({"AssociateIamInstanceProfile": Limit(100, 1000)}))
        self.answers = list(answers)
        self.sent: list[tuple[str, str]] = []

    def _client(self, account, region):
        return self._clients.setdefault((account, region), "scripted")  # no credentials needed

    def _invoke(self, account, region, operation, params):
        self.sent.append((region, operation))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(ec2, "RETRY_BASE_SECONDS", 0.0)


async def test_each_request_takes_a_token_of_its_account_region_and_action():
    gateway = ScriptedGateway([ASSOCIATED])
    await gateway._call("eu-west-1", "associate_iam_instance_profile", account="arn:aws:iam::1:role/a", InstanceId="i-1")
    bucket = gateway.limiter.bucket(("arn:aws:iam::1:role/a", "eu-west-1", "AssociateIamInstanceProfile"))
    assert bucket.tokens == pytest.approx(99, abs=0.5)
    assert gateway.limiter.bucket(("", "eu-west-1", "AssociateIamInstanceProfile")).tokens == 100


async def test_a_refusal_slows_the_bucket_and_is_retried_with_a_new_token():
    gateway = ScriptedGateway([THROTTLED, ASSOCIATED])
    association = await gateway.associate("us-east-1", "i-1", ProfileRef(name="web"))
    assert association.association_id == "iip-assoc-1"
    assert gateway.calls == {"associate_iam_instance_profile": 2}
    assert gateway.throttled == {"associate_iam_instance_profile": 1}
    bucket = gateway.limiter.bucket(("", "us-east-1", "AssociateIamInstanceProfile"))
    # halved, then refilled additively with the time the test took (seconds on a loaded machine)
    assert 1000 * DECREASE <= bucket.rate < 1000 and bucket.epoch == 1


@pytest.mark.parametrize("fault", [THROTTLED, UNAVAILABLE])
async def test_transient_faults_are_retried_up_to_max_attempts(fault):
    gateway = ScriptedGateway([fault] * 3, max_attempts=3)
    with pytest.raises(AwsFault) as raised:
        await gateway.associate("us-east-1", "i-1", ProfileRef(name="web"))
    assert raised.value.kind is fault.kind and len(gateway.sent) == 3 and gateway.answers == []


async def test_other_faults_are_not_retried():
    gateway = ScriptedGateway([DENIED, ASSOCIATED])
    with pytest.raises(AwsFault):
        await gateway.associate("us-east-1", "i-1", ProfileRef(name="web"))
    assert len(gateway.sent) == 1


async def test_a_paginated_describe_takes_one_token_per_page():
    pages = [{"IamInstanceProfileAssociations": [], "NextToken": "2"}, {"IamInstanceProfileAssociations": [], "NextToken": "3"},
             {"IamInstanceProfileAssociations": []}]
    limiter = RateLimiter({"DescribeIamInstanceProfileAssociations": Limit(10, 0.001)})
    gateway = ScriptedGateway(pages, limiter=limiter)
    await gateway.describe_associations("us-east-1", ["i-1", "i-2"])
    assert limiter.bucket(("", "us-east-1", "DescribeIamInstanceProfileAssociations")).tokens == pytest.approx(7, abs=0.01)


def test_botocore_does_not_retry_on_its_own():
    gateway = Ec2Gateway(session=boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"))
    client = gateway._client(OWN_ACCOUNT, "us-east-1")
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 1}
    gateway.close()


async def test_tokens_are_granted_only_while_a_thread_is_free():
    release = threading.Event()

    class Blocking(ScriptedGateway):
        def _invoke(self, account, region, operation, params):
            release.wait(TIMEOUT)
            return super()._invoke(account, region, operation, params)

    gateway = Blocking([ASSOCIATED] * 5, max_concurrency=2, limiter=RateLimiter({"AssociateIamInstanceProfile": Limit(100, 0.001)}))
    bucket = gateway.limiter.bucket(("", "us-east-1", "AssociateIamInstanceProfile"))
    gateway._client(OWN_ACCOUNT, "us-east-1")  # made already: the calls go straight for their tokens
    calls = [asyncio.ensure_future(gateway.associate("us-east-1", f"i-{n}", ProfileRef(name="web"))) for n in range(5)]
    await asyncio.sleep(0)  # every call reached its token or its wait (a yield, not a timing assumption)
    assert gateway.limiter.in_use == 2
    assert bucket.tokens == pytest.approx(98, abs=0.5)  # two tokens out, for the two busy threads
    release.set()
    await asyncio.wait_for(asyncio.gather(*calls), TIMEOUT)
    assert gateway.limiter.in_use == 0 and len(gateway.sent) == 5
    assert bucket.tokens == pytest.approx(95, abs=0.5)
    gateway.close()


class RecordingGateway(ScriptedGateway):
    def _invoke(self, account, region, operation, params):
        self.params = getattr(self, "params", []) + [dict(params)]
        return super()._invoke(account, region, operation, params)


async def test_a_sets_listing_filters_by_every_tag_and_live_states_in_pages_of_1000():
    def page(ids, token=None):
        return {"Reservations": [{"Instances": [{"InstanceId": i} for i in ids]}], **({"NextToken": token} if token else {})}

    limiter = RateLimiter({"DescribeInstances": Limit(10, 0.001)})
    gateway = RecordingGateway([page(["i-2", "i-1"], "next"), page(["i-3"])], limiter=limiter)
    found = await gateway.instances_tagged("us-east-1", {"role": "web", "env": "prod"}, account="arn:aws:iam::1:role/a")
    assert found == ["i-1", "i-2", "i-3"]
    first, second = gateway.params
    assert first["Filters"] == [{"Name": "tag:env", "Values": ["prod"]}, {"Name": "tag:role", "Values": ["web"]},
                                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    assert first["MaxResults"] == 1000 and "NextToken" not in first and second["NextToken"] == "next"
    assert limiter.bucket(("arn:aws:iam::1:role/a", "us-east-1", "DescribeInstances")).tokens == pytest.approx(8, abs=0.01)
