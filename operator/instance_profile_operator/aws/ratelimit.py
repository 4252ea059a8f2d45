"""Client-side token buckets that mirror EC2's request limits, per account, region and action.

EC2 meters every account and region with a token bucket per action and refuses a request that
finds its bucket empty (``RequestLimitExceeded``). The operator keeps a bucket of its own per
``(account, region, action)`` at EC2's documented defaults, scaled by the share of the budget
it may use, and every EC2 request waits for a token from it, so requests wait instead of being
refused.

* ``Limit`` and ``Bucket`` are the pure math (time is passed in): refill, take, and the
  feedback. Other clients drain the same EC2 buckets, so a refusal still happens; it means EC2's
  bucket is emptier than ours. ``Bucket.throttled`` then drains our tokens and halves the refill
  rate (down to 5 % of the configured rate); the rate climbs back linearly, reaching the
  configured rate again ``RECOVERY_SECONDS`` after a stop. Refusals of requests granted before
  that slowdown are echoes of the same event and change nothing (each grant carries the
  bucket's slowdown epoch).
* ``RateLimiter`` is the async waiting: ``acquire`` parks the caller on a future, one timer per
  key wakes the waiters when a token is due, and waiters are served by priority, then tenant by
  tenant in turn (``fairshare.FairQueue``; the caller's ``on_behalf_of``, a namespace), then by
  arrival: one namespace's flood of calls takes one token of each in turn, the others' calls the
  rest. No thread ever sleeps, and keys never wait for one another for tokens. With ``slots`` set (the
  gateway's threads), a token is granted only while a slot is free, and ``release`` frees it
  when the request is answered: a granted request is sent at once, never queued behind others
  while EC2's bucket fills up to its cap and loses the refill ours counted on. Free slots go to
  the first waiter by priority, then arrival, whatever its key.

Retries: botocore's own retries are switched off and the gateway retries instead, through this
limiter. botocore's ``adaptive`` mode keeps one send-rate limiter per client, i.e. per region
for all actions at once, so one throttled Associate would slow every Describe down; its retries
sleep in the gateway's threads, holding one of the few; and its retry attempts take no token from
our bucket, so they would come on top of the rate we promise EC2. With retries in the gateway,
each attempt waits for its own token, a throttle slows only the bucket it came from, and
backoff after a 5xx is an ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Collection, Hashable, Iterator, Mapping, TypeVar

from ..core.fairshare import FairQueue

DECREASE = 0.5  # the refill rate is multiplied by this on a refusal
FLOOR = 0.05  # ... but never drops below this fraction of the configured rate
RECOVERY_SECONDS = 30.0  # the rate climbs back by configured/RECOVERY_SECONDS per second
LATENCY = 0.25  # seconds: a request reaches EC2 up to this long after its grant


@dataclass(frozen=True)
class Limit:
    burst: float  # bucket size
    rate: float  # tokens per second

    def scaled(self, share: float) -> "Limit":
        return Limit(max(1.0, self.burst * share), self.rate * share)


# EC2's documented defaults per account and region (API request throttling).
DEFAULT_LIMITS: Mapping[str, Limit] = {
    "AssociateIamInstanceProfile": Limit(100, 5),
    "DisassociateIamInstanceProfile": Limit(100, 5),
    "ReplaceIamInstanceProfileAssociation": Limit(50, 5),
    "DescribeIamInstanceProfileAssociations": Limit(100, 20),
    "DescribeInstances": Limit(100, 20),
}

_LIMIT = re.compile(r"^(?P<action>[A-Za-z]+)=(?P<burst>[0-9.]+):(?P<rate>[0-9.]+)$")


def parse_limit(text: str) -> tuple[str, Limit]:
    """``ACTION=BURST:RATE``, e.g. ``AssociateIamInstanceProfile=100:5``; ValueError if not."""
    match = _LIMIT.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not ACTION=BURST:RATE")
    action = match["action"]
    if action not in DEFAULT_LIMITS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(DEFAULT_LIMITS)}")
    try:
        burst, rate = float(match["burst"]), float(match["rate"])
    except ValueError:
        raise ValueError(f"{text!r}: BURST and RATE must be numbers") from None
    if burst < 1 or rate <= 0:
        raise ValueError(f"{text!r}: BURST must be at least 1 and RATE positive")
    return action, Limit(burst, rate)


@dataclass
class Bucket:
    """A token bucket whose refill rate drops on refusals and climbs back. Pure: no clock."""

    limit: Limit
    tokens: float
    rate: float
    updated: float
    epoch: int = 0  # slowdowns so far

    @classmethod
    def full(cls, limit: Limit, now: float) -> "Bucket":
        return cls(limit, limit.burst, limit.rate, now)

    def _refill(self, elapsed: float) -> float:
        """Tokens gained over ``elapsed`` while the rate climbs linearly to the configured rate."""
        climb = self.limit.rate / RECOVERY_SECONDS
        ramp = min(elapsed, (self.limit.rate - self.rate) / climb)
        return self.rate * ramp + climb * ramp * ramp / 2 + self.limit.rate * (elapsed - ramp)

    def advance(self, now: float) -> None:
        elapsed = now - self.updated
        if elapsed <= 0:
            return
        self.tokens = min(self.limit.burst, self.tokens + self._refill(elapsed))
        self.rate = min(self.limit.rate, self.rate + self.limit.rate / RECOVERY_SECONDS * elapsed)
        self.updated = now

    def take(self, now: float) -> bool:
        """Take a token if there is one. A full bucket, like EC2's, refills only once a token is
        gone; EC2's starts when the request arrives, so ours starts ``LATENCY`` after the grant:
        otherwise EC2's bucket would lag ours for good by the first request's latency."""
        self.advance(now)
        if self.tokens < 1:
            return False
        if self.tokens >= self.limit.burst:
            self.updated = now + LATENCY
        self.tokens -= 1
        return True

    def wait(self, now: float) -> float:
        """Seconds until a token is due at the current rate (an upper bound while it climbs)."""
        self.advance(now)
        if self.tokens >= 1:
            return 0.0
        return max(0.0, self.updated - now) + (1 - self.tokens) / self.rate

    def refund(self) -> None:
        """Give back a token that was granted but never used."""
        self.tokens = min(self.limit.burst, self.tokens + 1)

    def throttled(self, now: float, epoch: int) -> None:
        """EC2 refused a request granted in ``epoch``: drain and slow down, once per slowdown."""
        if epoch != self.epoch:
            return
        self.advance(now)
        self.tokens = 0.0
        self.rate = max(self.limit.rate * FLOOR, self.rate * DECREASE)
        self.epoch += 1


Key = tuple[str, str, str]  # (account, region, action); account "" is the operator's own credentials

_priority: ContextVar[int] = ContextVar("ec2_call_priority", default=0)
_tenant: ContextVar[Hashable] = ContextVar("ec2_call_tenant", default=None)
V = TypeVar("V")


@contextmanager
def _setting(variable: ContextVar[V], value: V) -> Iterator[None]:
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


def at_priority(priority: int) -> AbstractContextManager[None]:
    """EC2 calls made inside wait for their tokens at ``priority`` (lower goes first)."""
    return _setting(_priority, priority)


def on_behalf_of(tenant: Hashable) -> AbstractContextManager[None]:
    """EC2 calls made inside wait for their tokens in ``tenant``'s turn (None: no tenant's own)."""
    return _setting(_tenant, tenant)


def current_tenant() -> Hashable:
    """The tenant of the calls made here (``on_behalf_of``)."""
    return _tenant.get()


@dataclass(frozen=True)
class Grant:
    key: Key
    epoch: int


@dataclass(eq=False)
class _Lane:
    bucket: Bucket
    waiters: FairQueue[tuple[int, int, asyncio.Future]] = field(default_factory=FairQueue)  # (priority, arrival, future)
    timer: asyncio.TimerHandle | None = None


def _waiting(waiter: tuple[int, int, asyncio.Future]) -> bool:
    return not waiter[2].done()  # a waiter cancelled while waiting is done


class RateLimiter:
    def __init__(self, limits: Mapping[str, Limit] = DEFAULT_LIMITS, share: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self._limits = {action: limit.scaled(share) for action, limit in {**DEFAULT_LIMITS, **limits}.items()}
        self._clock = clock
        self._lanes: dict[Key, _Lane] = {}
        self._waiting: set[_Lane] = set()  # lanes with waiters
        self._arrivals = itertools.count()
        self.slots: int | None = None  # grants in use at most (set by the gateway: its threads); None: no cap
        self.in_use = 0  # granted and not yet released

    def limit(self, action: str) -> Limit:
        return self._limits[action]

    def bucket(self, key: Key) -> Bucket:
        return self._lane(key).bucket

    def _lane(self, key: Key) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(Bucket.full(self._limits[key[2]], self._clock()))
        return lane

    def retain(self, places: Collection[tuple[str, str]]) -> None:
        """Drop the buckets of (account, region) places not in ``places`` that nobody waits on; a
        place named again starts with a full bucket."""
        for key in [key for key, lane in self._lanes.items() if key[:2] not in places and not lane.waiters]:
            lane = self._lanes.pop(key)
            if lane.timer is not None:
                lane.timer.cancel()
            self._waiting.discard(lane)

    async def acquire(self, account: str, region: str, action: str, priority: int | None = None) -> Grant:
        """Wait for a token of ``(account, region, action)`` and a free slot; by default at the
        caller's ``at_priority``, in the turn of its ``on_behalf_of``. A caller cancelled while
        waiting takes neither."""
        key = (account, region, action)
        lane = self._lane(key)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        priority = _priority.get() if priority is None else priority
        arrival = next(self._arrivals)
        lane.waiters.push((priority, arrival, future), _tenant.get(), priority, arrival)
        self._waiting.add(lane)
        self._dispatch()
        try:
            epoch = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted, but the caller is gone
                lane.bucket.refund()
                self.in_use -= 1
            self._dispatch()
            raise
        return Grant(key, epoch)

    def release(self, grant: Grant) -> None:
        """The request made with ``grant`` was answered: its slot is free again."""
        self.in_use -= 1
        self._dispatch()

    def throttled(self, grant: Grant) -> None:
        """EC2 refused a request made with ``grant``: its bucket is emptier than ours."""
        self._lane(grant.key).bucket.throttled(self._clock(), grant.epoch)
        self._dispatch()

    def _first(self, now: float) -> _Lane | None:
        """The lane with a token whose next waiter (its tenants in turn) comes first (priority,
        then arrival)."""
        first, first_waiter = None, None
        for lane in list(self._waiting):
            waiter = lane.waiters.peek(_waiting)
            if waiter is None:
                self._waiting.discard(lane)
            elif lane.bucket.wait(now) == 0 and (first_waiter is None or waiter[:2] < first_waiter[:2]):
                first, first_waiter = lane, waiter
        return first

    def _dispatch(self) -> None:
        now = self._clock()
        while self.slots is None or self.in_use < self.slots:
            lane = self._first(now)
            if lane is None:
                break
            future = lane.waiters.pop(_waiting)[2]
            lane.bucket.take(now)
            self.in_use += 1
            future.set_result(lane.bucket.epoch)
        for lane in self._waiting:  # a timer where a token is due; a free slot dispatches the rest
            if lane.timer is not None:
                lane.timer.cancel()
                lane.timer = None
            delay = lane.bucket.wait(now)
            if lane.waiters and delay > 0:
                lane.timer = asyncio.get_running_loop().call_later(delay, self._dispatch)
