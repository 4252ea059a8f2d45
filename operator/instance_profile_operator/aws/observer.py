"""Batched observation of EC2, each account and region (a place) on its own.

* ``Batcher`` merges the lookups that workers make at about the same time into one call per
  account and region (up to 200 instances per call, paginated), so 100 bindings applied at once cost a
  handful of Describe calls, not 100. Each tenant's (namespace's) lookups are merged among
  themselves: one namespace's stream of lookups, keeping a call in flight all the time, never
  makes another's wait for it, and each call takes its namespace's turn for EC2 tokens.
* ``Outages`` remembers the places whose last describe failed (throttling aside: EC2 answered). Their lookups fail at once with
  that fault, no EC2 call made, until a capped, growing backoff has passed; then one call tries
  the place again while the others keep failing at once, and its success ends the outage. A
  place whose calls fail, or time out slowly, thus costs one call at a time, never every worker.
* ``Observer`` keeps what a refresh (a resync, or the bindings listed at start-up) or a look-ahead
  (a burst of new bindings) found of each instance until the reconcile that follows it uses it, once: describing every bound instance in
  one batched pass feeds all the reconciles, however long 10,000 of them take. Our own
  mutations drop the entry, so a follow-up always looks at EC2 again. A refresh describes the
  places concurrently and reports each as soon as it is done: a failing place holds no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Generic, Hashable, Iterator, TypeVar

from ..core.faults import AwsFault, FaultKind
from ..core.model import MISSING_INSTANCE, Association, Instance, Place, Target
from ..runtime.workqueue import Priority, backoff
from .ec2 import Ec2Gateway
from .ratelimit import at_priority, current_tenant, on_behalf_of

V = TypeVar("V")
Fetch = Callable[[Place, list[str]], Awaitable[dict[str, V]]]
Described = Callable[[Place, Exception | None], None]
_Lane = tuple[Place, Hashable]  # a place and a tenant
OUTAGE_BASE_SECONDS = 1.0  # the first retry of a failing place; doubling up to the resync interval


@dataclass
class _Outage:
    fault: Exception
    failures: int
    retry_at: float  # inf while a call tries the place again


class Outages:
    """Places whose last describe failed, and when to try each again. Pure: time is passed in."""

    def __init__(self, base: float = OUTAGE_BASE_SECONDS, cap: float = 60.0,
                 recovered: Callable[[Place], None] = lambda place: None, rand: Callable[[], float] = random.random):
        self._base, self._cap, self._rand = base, cap, rand
        self._recovered = recovered
        self._outages: dict[Place, _Outage] = {}

    def __contains__(self, place: Place) -> bool:
        return place in self._outages

    def admit(self, place: Place, now: float) -> Exception | None:
        """None: a call may go (no outage, or it is time to try again, and this call does it);
        else the fault to answer with at once."""
        outage = self._outages.get(place)
        if outage is None:
            return None
        if now < outage.retry_at:
            return copy.copy(outage.fault)  # a fresh one: raising one object again and again grows its traceback
        outage.retry_at = math.inf  # one try at a time
        return None

    def failed(self, place: Place, fault: Exception, now: float) -> None:
        if isinstance(fault, AwsFault) and fault.kind is FaultKind.THROTTLED:
            self.succeeded(place)  # EC2 answered: one action's bucket is empty, which the limiter paces
            return
        outage = self._outages.get(place)
        failures = 1 if outage is None else outage.failures + 1
        delay = backoff(failures - 1, self._base, self._cap, self._rand)
        self._outages[place] = _Outage(fault, failures, now + delay)

    def succeeded(self, place: Place) -> None:
        if self._outages.pop(place, None) is not None:
            self._recovered(place)


class Batcher(Generic[V]):
    """Merge lookups per account and region (a place) and tenant (the caller's ``on_behalf_of``):
    those made within ``window`` of each other, and all those made while a call of theirs is in
    flight, go out together in the next call. A place in ``outages`` is answered with its fault at
    once, but for the calls that try it again."""

    def __init__(self, fetch: Fetch[V], window: float = 0.02, outages: Outages | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._window = window
        self._outages = outages or Outages()
        self._clock = clock
        self._pending: dict[_Lane, dict[str, asyncio.Future]] = {}
        self._in_flight: set[_Lane] = set()

    async def get(self, place: Place, instance_id: str) -> V | None:
        loop = asyncio.get_running_loop()
        lane = (place, current_tenant())
        pending = self._pending.get(lane)
        if pending is None:
            fault = self._outages.admit(place, self._clock())
            if fault is not None:
                raise fault
            pending = self._pending[lane] = {}
            if lane not in self._in_flight:
                loop.call_later(self._window, self._flush, lane)
        future = pending.get(instance_id)
        if future is None:
            future = pending[instance_id] = loop.create_future()
        return await asyncio.shield(future)

    def _flush(self, lane: _Lane) -> None:
        batch = self._pending.pop(lane, {})
        if batch:
            self._in_flight.add(lane)
            asyncio.ensure_future(self._resolve(lane, batch))

    async def _resolve(self, lane: _Lane, batch: dict[str, asyncio.Future]) -> None:
        place, tenant = lane
        try:
            with on_behalf_of(tenant):
                found = await self._fetch(place, list(batch))
        except Exception as error:  # every waiter gets the fault
            self._outages.failed(place, error, self._clock())
            for future in batch.values():
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: waiters that went away do not warn
        else:
            self._outages.succeeded(place)
            for instance_id, future in batch.items():
                if not future.done():
                    future.set_result(found.get(instance_id))
        finally:
            self._in_flight.discard(lane)
            self._flush(lane)  # whatever queued up meanwhile


class Observer:
    def __init__(self, gateway: Ec2Gateway, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 recovered: Callable[[Place], None] = lambda place: None):
        """``recovered(place)`` is called when a place that was failing answers again."""
        self._gateway = gateway
        self._ttl = ttl
        self._clock = clock
        self.outages = Outages(cap=ttl, recovered=recovered)
        self._associations: Batcher[Association] = Batcher(
            lambda place, ids: gateway.describe_associations(place[1], ids, account=place[0]), outages=self.outages, clock=clock)
        self._instances: Batcher[Instance] = Batcher(  # outages of their own: one action's denial is not the other's
            lambda place, ids: gateway.describe_instances(place[1], ids, account=place[0]), outages=Outages(cap=ttl), clock=clock)
        self._cache: dict[Target, tuple[float, Association | None]] = {}  # from refreshes, until used
        self._mutated: dict[int, set[Target]] = {}  # per refresh or look-ahead in flight: targets mutated meanwhile
        self._refreshing: dict[Place, asyncio.Event] = {}  # set when the place's refresh in flight ends

    async def association(self, target: Target, fresh: bool = False) -> Association | None:
        """The instance's current association: what the last refresh found, used once and
        within ``ttl``, unless ``fresh``; else a (batched) describe."""
        hit = self._cache.pop(target, None)
        if hit is not None and not fresh and self._clock() - hit[0] < self._ttl:
            return hit[1]
        return await self._associations.get(target.place, target.instance_id)

    async def look_ahead(self, target: Target) -> None:
        """Look the association up now (batched with every other lookup of its place and tenant)
        and keep it for the next reconcile, unless the instance is mutated meanwhile; a fault is
        left for that reconcile to meet."""
        with self._tracking_mutations() as mutated:
            fetched = self._clock()
            try:
                found = await self._associations.get(target.place, target.instance_id)
            except Exception:
                return
        if target not in mutated:
            self._cache[target] = (fetched, found)

    async def instance(self, target: Target) -> Instance:
        """The instance's state and tags (asked only when a decision needs them)."""
        return await self._instances.get(target.place, target.instance_id) or MISSING_INSTANCE

    def observed_id(self, target: Target) -> str | None:
        """The id of the association the last refresh found on the instance, without using it up;
        None when it found none or did not describe it."""
        hit = self._cache.get(target)
        return hit[1].association_id if hit is not None and hit[1] is not None else None

    def invalidate(self, target: Target) -> None:
        """Called after each mutation of ``target``'s association."""
        self._cache.pop(target, None)
        for mutated in self._mutated.values():
            mutated.add(target)

    def forget(self, target: Target) -> None:
        self._cache.pop(target, None)

    async def refresh(self, instances_by_place: dict[Place, list[str]], described: Described = lambda place, fault: None,
                      wait: bool = False) -> set[Place]:
        """Describe every listed instance: one call per account, region and 200 instances, whose
        tokens wait behind those of a user's change. What a describe finds is kept for one use
        (the reconcile that follows), unless the instance was mutated while it was in flight.

        The places are described concurrently, and ``described(place, fault)`` is called as soon
        as one is done (``fault`` None) or has failed, whatever the exception: a place in an
        outage fails at once with its fault, unless it is time to try it again. Return the places
        left out because an earlier refresh of theirs is still in flight; with ``wait``, none: such
        a place is described once that refresh ends (the others go on meanwhile)."""
        now = self._clock()
        self._cache = {t: hit for t, hit in self._cache.items() if now - hit[0] < self._ttl}
        busy = set() if wait else set(instances_by_place) & set(self._refreshing)
        with self._tracking_mutations() as mutated:
            await asyncio.gather(*(self._refresh_place(place, instance_ids, mutated, described)
                                   for place, instance_ids in instances_by_place.items() if place not in busy))
        return busy

    @contextlib.contextmanager
    def _tracking_mutations(self) -> Iterator[set[Target]]:
        """The targets mutated while the block runs (a describe in flight), told by ``invalidate``."""
        mutated: set[Target] = set()
        self._mutated[id(mutated)] = mutated  # by identity: another describe's set may be equal
        try:
            yield mutated
        finally:
            del self._mutated[id(mutated)]

    async def _refresh_place(self, place: Place, instance_ids: list[str], mutated: set[Target], described: Described) -> None:
        while (ongoing := self._refreshing.get(place)) is not None:
            await ongoing.wait()
        ended = self._refreshing[place] = asyncio.Event()
        try:
            fault = self.outages.admit(place, self._clock())
            if fault is None:
                fetched = self._clock()
                try:
                    with at_priority(Priority.BACKGROUND):
                        found = await self._gateway.describe_associations(place[1], instance_ids, account=place[0])
                except Exception as error:
                    self.outages.failed(place, error, self._clock())
                    fault = error
                else:
                    self.outages.succeeded(place)
                    for instance_id in instance_ids:
                        target = Target(place[1], instance_id, place[0])
                        if target not in mutated:
                            self._cache[target] = (fetched, found.get(instance_id))
        finally:
            del self._refreshing[place]
            ended.set()
        described(place, fault)
