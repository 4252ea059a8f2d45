"""Token buckets: the pure math (fake clock), then the async waiting (priority, keys, cancellation)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instance_profile_operator.aws.ratelimit import (
    DECREASE, DEFAULT_LIMITS, FLOOR, LATENCY, RECOVERY_SECONDS, Bucket, Limit, RateLimiter, at_priority, on_behalf_of, parse_limit,
)

from ..support.clock import FakeClock

EPS = 1e-9

# --------------------------------------------------------------------------------------------
# Limit, parse_limit()
# --------------------------------------------------------------------------------------------


def test_defaults_are_ec2s_documented_buckets():
    assert DEFAULT_LIMITS["AssociateIamInstanceProfile"] == Limit(100, 5)
    assert DEFAULT_LIMITS["DisassociateIamInstanceProfile"] == Limit(100, 5)
    assert DEFAULT_LIMITS["ReplaceIamInstanceProfileAssociation"] == Limit(50, 5)
    assert DEFAULT_LIMITS["DescribeIamInstanceProfileAssociations"] == Limit(100, 20)
    assert DEFAULT_LIMITS["DescribeInstances"] == Limit(100, 20)


@pytest.mark.parametrize(("share", "scaled"), [
    (1.0, Limit(100, 5)),
    (0.6, Limit(60, 3)),
    (0.001, Limit(1, 0.005)),  # a bucket always holds at least one token
])
def test_share_scales_burst_and_rate(share, scaled):
    got = Limit(100, 5).scaled(share)
    assert got.burst == pytest.approx(scaled.burst) and got.rate == pytest.approx(scaled.rate)


@pytest.mark.parametrize(("text", "parsed"), [
    ("AssociateIamInstanceProfile=60:3", ("AssociateIamInstanceProfile", Limit(60, 3))),
    (" DescribeInstances=200:40.5 ", ("DescribeInstances", Limit(200, 40.5))),
])
def test_parse_limit(text, parsed):
    assert parse_limit(text) == parsed


@pytest.mark.parametrize(("text", "message"), [
    ("AssociateIamInstanceProfile", "is not ACTION=BURST:RATE"),
    ("AssociateIamInstanceProfile=100", "is not ACTION=BURST:RATE"),
    ("RunInstances=100:5", "unknown action 'RunInstances'"),
    ("DescribeInstances=1.2.3:5", "must be numbers"),
    ("DescribeInstances=0:5", "BURST must be at least 1"),
    ("DescribeInstances=10:0", "RATE positive"),
])
def test_parse_limit_refuses_nonsense(text, message):
    with pytest.raises(ValueError, match=message):
        parse_limit(text)


def test_configured_limits_override_defaults_and_share_applies_to_all():
    limiter = RateLimiter({"DescribeInstances": Limit(10, 2)}, share=0.5)
    assert limiter.limit("DescribeInstances") == Limit(5, 1)
    assert limiter.limit("AssociateIamInstanceProfile") == Limit(50, 2.5)


# --------------------------------------------------------------------------------------------
# Bucket: pure math
# --------------------------------------------------------------------------------------------

LIMIT = Limit(burst=10, rate=5)


def takes(bucket: Bucket, now: float, attempts: int) -> int:
    return sum(bucket.take(now) for _ in range(attempts))


@pytest.mark.parametrize(("elapsed", "granted"), [
    (0.0, 10),  # a full bucket grants its burst at once
    (0.2, 10),  # ... and is full already
    (1.0, 10),
])
def test_full_bucket_grants_its_burst(elapsed, granted):
    bucket = Bucket.full(LIMIT, 0.0)
    assert takes(bucket, elapsed, 50) == granted


@pytest.mark.parametrize(("elapsed", "granted"), [
    (0.0, 0),
    (0.19, 0),
    (0.2, 1),
    (1.0, 5),
    (1.99, 9),
    (2.0, 10),
    (60.0, 10),  # capped at the burst
])
def test_empty_bucket_refills_at_its_rate(elapsed, granted):
    bucket = Bucket.full(LIMIT, 0.0)
    takes(bucket, 0.0, 10)
    assert takes(bucket, LATENCY + elapsed + EPS, 50) == granted


def test_a_full_bucket_refills_from_latency_after_its_first_grant_like_ec2s_after_the_arrival():
    bucket = Bucket.full(LIMIT, 0.0)
    takes(bucket, 0.0, 10)
    assert takes(bucket, LATENCY - EPS, 1) == 0
    assert bucket.wait(LATENCY - EPS) == pytest.approx(EPS + 1 / LIMIT.rate)
    assert takes(bucket, LATENCY + 1 / LIMIT.rate + EPS, 1) == 1


def test_a_bucket_below_its_burst_refills_from_the_grant():
    bucket = Bucket(LIMIT, 5.0, LIMIT.rate, 0.0)
    takes(bucket, 0.0, 5)
    assert takes(bucket, 1 / LIMIT.rate + EPS, 1) == 1


@pytest.mark.parametrize(("tokens", "wait"), [(0.0, 0.2), (0.5, 0.1), (1.0, 0.0), (7.0, 0.0)])
def test_wait_is_the_time_to_the_next_token(tokens, wait):
    bucket = Bucket(LIMIT, tokens, LIMIT.rate, 0.0)
    assert bucket.wait(0.0) == pytest.approx(wait)


def test_refund_gives_a_token_back_up_to_the_burst():
    bucket = Bucket.full(LIMIT, 0.0)
    bucket.take(0.0)
    bucket.refund()
    bucket.refund()
    assert bucket.tokens == LIMIT.burst


@pytest.mark.parametrize(("rate", "slowed"), [
    (5.0, 2.5),
    (2.5, 1.25),
    (0.3, 0.25),  # the floor: 5 % of 5/s
    (0.25, 0.25),
])
def test_refusal_drains_and_halves_the_rate_down_to_the_floor(rate, slowed):
    bucket = Bucket(LIMIT, 8.0, rate, 0.0)
    bucket.throttled(0.0, bucket.epoch)
    assert bucket.tokens == 0 and bucket.rate == pytest.approx(slowed) and bucket.epoch == 1


def test_refusals_of_requests_granted_before_the_slowdown_change_nothing():
    bucket = Bucket.full(LIMIT, 0.0)
    epoch = bucket.epoch
    bucket.throttled(0.0, epoch)
    bucket.advance(1.0)
    before = (bucket.tokens, bucket.rate)
    bucket.throttled(1.0, epoch)  # an echo of the same congestion
    assert (bucket.tokens, bucket.rate) == before
    bucket.throttled(1.0, bucket.epoch)  # granted after the slowdown: slows down again
    assert bucket.rate < before[1]


@pytest.mark.parametrize(("elapsed", "rate"), [
    (0.0, 2.5),
    (6.0, 3.5),  # climbs by 5/30 per second
    (15.0, 5.0),  # back at the configured rate
    (100.0, 5.0),  # and no further
])
def test_rate_recovers_linearly(elapsed, rate):
    bucket = Bucket.full(LIMIT, 0.0)
    bucket.throttled(0.0, bucket.epoch)
    bucket.advance(elapsed)
    assert bucket.rate == pytest.approx(rate)


def test_tokens_during_recovery_are_the_integral_of_the_climbing_rate():
    bucket = Bucket(Limit(1000, 5), 0.0, 2.5, 0.0)
    bucket.advance(15.0)  # from 2.5/s to 5/s in 15 s: 15 * 3.75 tokens
    assert bucket.tokens == pytest.approx(56.25)


steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=3.0),  # time passes
        st.integers(min_value=0, max_value=30),  # attempts to take a token
        st.booleans(),  # EC2 refuses the last request granted
    ),
    max_size=40,
)
limits = st.builds(Limit, burst=st.integers(min_value=1, max_value=100).map(float),
                   rate=st.floats(min_value=0.1, max_value=50.0))


@settings(max_examples=300)
@given(limit=limits, steps=steps)
def test_never_more_than_burst_plus_rate_times_t_in_any_window(limit, steps):
    now = 0.0
    bucket = Bucket.full(limit, now)
    granted: list[float] = []
    last_epoch = bucket.epoch
    for elapsed, attempts, refused in steps:
        now += elapsed
        for _ in range(attempts):
            if bucket.take(now):
                granted.append(now)
                last_epoch = bucket.epoch
        if refused:
            bucket.throttled(now, last_epoch)
    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            window = granted[j] - start
            assert j - i + 1 <= limit.burst + limit.rate * window + 1e-6


@given(limit=limits, rate_share=st.floats(min_value=FLOOR, max_value=1.0), elapsed=st.floats(min_value=0.0, max_value=120.0))
def test_decrease_and_recovery_bounds(limit, rate_share, elapsed):
    bucket = Bucket(limit, limit.burst, limit.rate * rate_share, 0.0)
    before = bucket.rate
    bucket.throttled(0.0, bucket.epoch)
    assert bucket.tokens == 0
    assert bucket.rate == pytest.approx(max(limit.rate * FLOOR, before * DECREASE))
    assert limit.rate * FLOOR - EPS <= bucket.rate <= before
    slowed = bucket.rate
    bucket.advance(elapsed)
    assert bucket.rate == pytest.approx(min(limit.rate, slowed + limit.rate / RECOVERY_SECONDS * elapsed))
    assert bucket.tokens <= limit.burst
    if elapsed >= RECOVERY_SECONDS:
        assert bucket.rate == limit.rate  # fully recovered within RECOVERY_SECONDS, whatever the depth


@given(limit=limits, rate_share=st.floats(min_value=FLOOR, max_value=1.0),
       cuts=st.lists(st.floats(min_value=0.0, max_value=10.0), max_size=10))
def test_refill_does_not_depend_on_how_often_it_is_computed(limit, rate_share, cuts):
    big = Limit(1e9, limit.rate)  # no cap, to compare the integrals
    once = Bucket(big, 0.0, limit.rate * rate_share, 0.0)
    stepped = Bucket(big, 0.0, limit.rate * rate_share, 0.0)
    now = 0.0
    for cut in cuts:
        now += cut
        stepped.advance(now)
    once.advance(now)
    assert stepped.tokens == pytest.approx(once.tokens, rel=1e-6, abs=1e-6)
    assert stepped.rate == pytest.approx(once.rate)


# --------------------------------------------------------------------------------------------
# RateLimiter: async waiting
# --------------------------------------------------------------------------------------------

KEY = ("", "us-east-1", "AssociateIamInstanceProfile")
OTHER_ACCOUNT = ("arn:aws:iam::111111111111:role/tenant", "us-east-1", "AssociateIamInstanceProfile")
OTHER_REGION = ("", "eu-west-1", "AssociateIamInstanceProfile")
OTHER_ACTION = ("", "us-east-1", "DescribeInstances")
TIMEOUT = 1.0  # real seconds: reached only when a test fails
RATE = 100.0  # one token per 10 ms of the fake clock (and of the timer's real delay)
TICK = 1.01 / RATE  # a little more than one token's worth: float sums of 1/RATE can fall short of 1
NEXT = LATENCY + TICK  # a one-token bucket is full whenever it has a token: it refills from LATENCY after a grant


@pytest.fixture
def limiter(clock: FakeClock) -> RateLimiter:
    one = Limit(burst=1, rate=RATE)
    return RateLimiter({action: one for action in DEFAULT_LIMITS}, clock=clock)


class Recorder:
    """Starts acquirers and records the order in which they get their tokens."""

    def __init__(self, limiter: RateLimiter):
        self.limiter = limiter
        self.order: list[str] = []
        self.tasks: dict[str, asyncio.Task] = {}
        self._granted = asyncio.Event()

    async def start(self, name: str, key=KEY, priority: int | None = None, tenant: str | None = None) -> asyncio.Task:
        async def acquire() -> None:
            with on_behalf_of(tenant):
                await self.limiter.acquire(*key, priority=priority)
            self.order.append(name)
            self._granted.set()

        self.tasks[name] = task = asyncio.ensure_future(acquire())
        await asyncio.sleep(0)  # let it reach its wait (a yield, not a timing assumption)
        return task

    async def next_grant(self) -> str:
        count = len(self.order)
        while len(self.order) == count:
            self._granted.clear()
            await asyncio.wait_for(self._granted.wait(), TIMEOUT)
        return self.order[-1]


async def test_tokens_are_granted_at_once_while_the_bucket_has_them(limiter):
    grant = await asyncio.wait_for(limiter.acquire(*KEY), TIMEOUT)
    assert grant.key == KEY and limiter.bucket(KEY).tokens == 0


async def test_waiters_get_tokens_in_arrival_order_as_they_refill(limiter, clock):
    await limiter.acquire(*KEY)
    recorder = Recorder(limiter)
    for name in ("a", "b", "c"):
        await recorder.start(name)
    assert recorder.order == []  # no token yet: everyone waits
    for expected in ("a", "b", "c"):
        clock.advance(NEXT)
        assert await recorder.next_grant() == expected


async def test_a_users_call_goes_before_queued_background_calls(limiter, clock):
    await limiter.acquire(*KEY)
    recorder = Recorder(limiter)
    for n in range(5):
        await recorder.start(f"resync-{n}", priority=1)
    await recorder.start("user", priority=0)
    clock.advance(NEXT)
    assert await recorder.next_grant() == "user"  # one token behind, not five
    for n in range(5):
        clock.advance(NEXT)
        assert await recorder.next_grant() == f"resync-{n}"


async def test_priority_comes_from_the_callers_context(limiter, clock):
    await limiter.acquire(*KEY)
    recorder = Recorder(limiter)
    with at_priority(1):
        await recorder.start("resync")  # the task copies the context it was created in
    await recorder.start("user")
    clock.advance(NEXT)
    assert await recorder.next_grant() == "user"


@pytest.mark.parametrize("other", [OTHER_ACCOUNT, OTHER_REGION, OTHER_ACTION])
async def test_an_empty_bucket_never_holds_up_another_key(limiter, clock, other):
    await limiter.acquire(*KEY)
    recorder = Recorder(limiter)
    await recorder.start("stuck")
    await asyncio.wait_for(limiter.acquire(*other), TIMEOUT)  # while "stuck" waits
    assert recorder.order == [] and limiter.bucket(KEY).tokens == 0


@given(keys=st.lists(st.sampled_from([KEY, OTHER_ACCOUNT, OTHER_REGION, OTHER_ACTION]), max_size=30))
def test_keys_are_independent(keys):
    async def run() -> None:
        limiter = RateLimiter({action: Limit(5, 1) for action in DEFAULT_LIMITS}, clock=lambda: 0.0)
        granted = {key: 0 for key in keys}
        for key in keys:
            if limiter.bucket(key).tokens >= 1:
                await asyncio.wait_for(limiter.acquire(*key), TIMEOUT)
                granted[key] += 1
        for key in granted:  # each key's burst, whatever the others took
            assert granted[key] == min(5, keys.count(key))
            assert limiter.bucket(key).tokens == 5 - granted[key]

    asyncio.run(run())


async def test_a_caller_cancelled_while_waiting_takes_no_token(limiter, clock):
    await limiter.acquire(*KEY)
    recorder = Recorder(limiter)
    gone = await recorder.start("gone")
    await recorder.start("next")
    gone.cancel()
    clock.advance(NEXT)
    assert await recorder.next_grant() == "next"
    assert gone.cancelled() and limiter.bucket(KEY).tokens < 1


async def test_a_token_granted_to_a_caller_cancelled_before_it_resumed_is_passed_on(limiter, clock):
    await limiter.acquire(*KEY)
    recorder = Recorder(limiter)
    first = await recorder.start("first", priority=0)
    clock.advance(NEXT)
    second = asyncio.ensure_future(limiter.acquire(*KEY, priority=1))
    await asyncio.sleep(0)  # second's arrival grants first its token; first has not resumed yet
    first.cancel()
    await asyncio.wait_for(second, TIMEOUT)  # the refunded token goes to the next waiter
    assert first.cancelled() and recorder.order == []


async def test_refusals_slow_down_only_their_own_bucket(limiter):
    grant = await limiter.acquire(*KEY)
    await limiter.acquire(*OTHER_ACTION)
    limiter.throttled(grant)
    assert limiter.bucket(KEY).rate == pytest.approx(RATE * DECREASE)
    assert limiter.bucket(OTHER_ACTION).rate == RATE


async def test_no_token_is_granted_without_a_free_slot(limiter):
    limiter.slots = 1
    first = await asyncio.wait_for(limiter.acquire(*KEY), TIMEOUT)
    recorder = Recorder(limiter)
    await recorder.start("other", key=OTHER_ACTION)
    assert recorder.order == [] and limiter.bucket(OTHER_ACTION).tokens == 1  # a token is there, a slot is not
    limiter.release(first)
    assert await recorder.next_grant() == "other" and limiter.in_use == 1


async def test_a_free_slot_goes_to_a_users_call_before_earlier_background_calls_of_any_key(limiter):
    limiter.slots = 1
    first = await asyncio.wait_for(limiter.acquire(*KEY), TIMEOUT)
    recorder = Recorder(limiter)
    await recorder.start("resync", key=OTHER_ACTION, priority=1)
    await recorder.start("user", key=OTHER_REGION, priority=0)
    limiter.release(first)
    assert await recorder.next_grant() == "user"


async def test_namespaces_take_turns_for_a_buckets_tokens(limiter, clock):
    await limiter.acquire(*KEY)
    recorder = Recorder(limiter)
    for n in range(10):
        await recorder.start(f"flood-{n}", tenant="flood")
    await recorder.start("calm", tenant="calm")
    grants = []
    for _ in range(3):
        clock.advance(NEXT)
        grants.append(await recorder.next_grant())
    assert grants == ["flood-0", "calm", "flood-1"]  # one token behind the flood, not ten


async def test_a_namespaces_turn_does_not_lift_its_background_calls_over_another_namespaces_call(limiter, clock):
    await limiter.acquire(*KEY)
    recorder = Recorder(limiter)
    await recorder.start("calm-resync", priority=1, tenant="calm")
    for n in range(2):
        await recorder.start(f"flood-{n}", tenant="flood")
    grants = []
    for _ in range(3):
        clock.advance(NEXT)
        grants.append(await recorder.next_grant())
    assert grants == ["flood-0", "flood-1", "calm-resync"]
