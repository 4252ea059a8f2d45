"""The EC2 throttling emulator refuses what EC2 would; the operator's limiter keeps under it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore.config
import botocore.exceptions
import pytest

from bench.ec2_throttle import ThrottleEmulator
from instance_profile_operator.aws.ec2 import Ec2Gateway
from instance_profile_operator.aws.ratelimit import Limit, RateLimiter

BURST, RATE = 10, 20.0  # small buckets, so that a burst beyond them takes a fraction of a second
REQUESTS = 40


@pytest.fixture
def emulator(devenv):
    emulator = ThrottleEmulator(devenv.ec2_endpoint_url, {"DescribeInstances": (BURST, RATE)}).start()
    yield emulator
    emulator.stop()


def client(devenv, url: str, access_key: str = "testing"):
    config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=8)
    return boto3.Session(aws_access_key_id=access_key, aws_secret_access_key="testing", region_name=devenv.region) \
        .client("ec2", endpoint_url=url, config=config)


def burst(ec2, count: int) -> list[str]:
    """``count`` DescribeInstances at once from 8 threads; the error code of each (or "ok")."""
    def one(_: int) -> str:
        try:
            ec2.describe_instances(MaxResults=5)
            return "ok"
        except botocore.exceptions.ClientError as error:
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            return error.response["Error"]["Code"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


@pytest.fixture
def slow_emulator(devenv):
    """A slow refill, so that however long a burst takes on a busy machine, the bucket cannot keep up."""
    emulator = ThrottleEmulator(devenv.ec2_endpoint_url, {"DescribeInstances": (BURST, 0.5)}).start()
    yield emulator
    emulator.stop()


def test_a_burst_beyond_the_bucket_is_refused_like_ec2_does(devenv, slow_emulator):
    emulator = slow_emulator
    outcomes = burst(client(devenv, emulator.url), REQUESTS)
    refused = outcomes.count("RequestLimitExceeded")
    assert set(outcomes) == {"ok", "RequestLimitExceeded"}
    assert outcomes.count("ok") >= BURST and refused > 0
    assert emulator.counts()["requests"] == {"DescribeInstances": REQUESTS}
    assert emulator.counts()["refused"] == {"DescribeInstances": refused}


def test_accounts_have_buckets_of_their_own(devenv, slow_emulator):
    assert "RequestLimitExceeded" in burst(client(devenv, slow_emulator.url, "AKIAFIRSTACCOUNT"), REQUESTS)
    assert burst(client(devenv, slow_emulator.url, "AKIASECONDACCOUNT"), BURST) == ["ok"] * BURST


def test_a_neighbour_using_the_whole_rate_leaves_only_the_burst(devenv, emulator):
    emulator.add_neighbour("testing", devenv.region, "DescribeInstances", 1.0)
    outcomes = burst(client(devenv, emulator.url), REQUESTS)
    assert outcomes.count("ok") == BURST  # no refill is left for anyone else
    assert emulator.counts()["refused"] == {"DescribeInstances": REQUESTS - BURST}


async def test_the_same_burst_through_the_operators_limiter_is_never_refused(devenv, ec2, emulator, monkeypatch):
    # moto's first DescribeInstances loads its catalogues (seconds): requests granted meanwhile would
    # queue in the gateway's pool and leave together, which is not what this test is about
    ec2.describe_instances(MaxResults=5)
    for key, value in devenv.aws_variables().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator.url)
    # a 5 % margin for the time a request takes from the limiter to EC2's bucket
    limiter = RateLimiter({"DescribeInstances": Limit(BURST, RATE)}, share=0.95)
    gateway = Ec2Gateway(max_concurrency=8, max_attempts=1, session=boto3.Session(), limiter=limiter)
    try:
        await asyncio.gather(*(gateway.describe_instances(devenv.region, ["i-00000000000000000"]) for _ in range(REQUESTS)))
    finally:
        gateway.close()
    assert emulator.counts()["requests"] == {"DescribeInstances": REQUESTS}
    assert emulator.counts()["refused"] == {}
