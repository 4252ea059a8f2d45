"""Batched observation of EC2.

* ``Batcher`` merges the lookups that workers make at about the same time into one call per
  account and region (up to 200 instances per call, paginated), so 100 bindings applied at once cost a
  handful of Describe calls, not 100.
* ``Observer`` keeps what a refresh (a resync, or the bindings listed at start-up) found of each
  instance until the reconcile that follows it uses it, once: describing every bound instance in
  one batched pass feeds all the reconciles, however long 10,000 of them take. Our own
  mutations drop the entry, so a follow-up always looks at EC2 again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Generic, TypeVar

from .ec2 import Ec2Gateway
from .model import MISSING_INSTANCE, Association, Instance, Place, Target
from .ratelimit import at_priority
from .workqueue import Priority

V = TypeVar("V")
Fetch = Callable[[Place, list[str]], Awaitable[dict[str, V]]]


class Batcher(Generic[V]):
    """Merge lookups per account and region (a place): those made within ``window`` of each other,
    and all those made while a call for the place is in flight, go out together in the next call."""

    def __init__(self, fetch: Fetch[V], window: float = 0.02):
        self._fetch = fetch
        self._window = window
        self._pending: dict[Place, dict[str, asyncio.Future]] = {}
        self._in_flight: set[Place] = set()

    async def get(self, place: Place, instance_id: str) -> V | None:
        loop = asyncio.get_running_loop()
        pending = self._pending.get(place)
        if pending is None:
            pending = self._pending[place] = {}
            if place not in self._in_flight:
                loop.call_later(self._window, self._flush, place)
        future = pending.get(instance_id)
        if future is None:
            future = pending[instance_id] = loop.create_future()
        return await asyncio.shield(future)

    def _flush(self, place: Place) -> None:
        batch = self._pending.pop(place, {})
        if batch:
            self._in_flight.add(place)
            asyncio.ensure_future(self._resolve(place, batch))

    async def _resolve(self, place: Place, batch: dict[str, asyncio.Future]) -> None:
        try:
            found = await self._fetch(place, list(batch))
        except Exception as error:  # every waiter gets the fault
            for future in batch.values():
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: waiters that went away do not warn
        else:
            for instance_id, future in batch.items():
                if not future.done():
                    future.set_result(found.get(instance_id))
        finally:
            self._in_flight.discard(place)
            self._flush(place)  # whatever queued up meanwhile


class Observer:
    def __init__(self, gateway: Ec2Gateway, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._gateway = gateway
        self._ttl = ttl
        self._clock = clock
        self._associations: Batcher[Association] = Batcher(
            lambda place, ids: gateway.describe_associations(place[1], ids, account=place[0]))
        self._instances: Batcher[Instance] = Batcher(
            lambda place, ids: gateway.describe_instances(place[1], ids, account=place[0]))
        self._cache: dict[Target, tuple[float, Association | None]] = {}  # from refreshes, until used
        self._mutated: list[set[Target]] = []  # per refresh in flight: targets mutated meanwhile

    async def association(self, target: Target, fresh: bool = False) -> Association | None:
        """The instance's current association: what the last refresh found, used once and
        within ``ttl``, unless ``fresh``; else a (batched) describe."""
        hit = self._cache.pop(target, None)
        if hit is not None and not fresh and self._clock() - hit[0] < self._ttl:
            return hit[1]
        return await self._associations.get(target.place, target.instance_id)

    async def instance(self, target: Target) -> Instance:
        """The instance's state and tags (asked only when a decision needs them)."""
        return await self._instances.get(target.place, target.instance_id) or MISSING_INSTANCE

    def invalidate(self, target: Target) -> None:
        """Called after each mutation of ``target``'s association."""
        self._cache.pop(target, None)
        for mutated in self._mutated:
            mutated.add(target)

    def forget(self, target: Target) -> None:
        self._cache.pop(target, None)

    async def refresh(self, instances_by_place: dict[Place, list[str]]) -> None:
        """Describe every listed instance: one call per account, region and 200 instances, whose
        tokens wait behind those of a user's change. What a describe finds is kept for one use
        (the reconcile that follows), unless the instance was mutated while it was in flight."""
        now = self._clock()
        self._cache = {t: hit for t, hit in self._cache.items() if now - hit[0] < self._ttl}
        mutated: set[Target] = set()
        self._mutated.append(mutated)
        try:
            with at_priority(Priority.BACKGROUND):
                for (account, region), instance_ids in instances_by_place.items():
                    fetched = self._clock()
                    found = await self._gateway.describe_associations(region, instance_ids, account=account)
                    for instance_id in instance_ids:
                        target = Target(region, instance_id, account)
                        if target not in mutated:
                            self._cache[target] = (fetched, found.get(instance_id))
        finally:
            self._mutated.remove(mutated)
