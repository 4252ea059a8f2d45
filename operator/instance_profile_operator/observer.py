"""Batched observation of EC2.

* ``Batcher`` merges the lookups that workers make at about the same time into one call per
  region (up to 200 instances per call, paginated), so 100 bindings applied at once cost a
  handful of Describe calls, not 100.
* ``Observer`` keeps each instance's association for a few seconds, so that a resync, which
  describes every bound instance in one batched pass, feeds the reconciles that follow it.
  Our own mutations drop the entry, so a follow-up always looks at EC2 again.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Awaitable, Callable, Generic, TypeVar

from .ec2 import Ec2Gateway
from .model import Association, InstanceState, Target
from .ratelimit import at_priority
from .workqueue import Priority

V = TypeVar("V")
Fetch = Callable[[str, list[str]], Awaitable[dict[str, V]]]


class Batcher(Generic[V]):
    """Merge lookups per region: those made within ``window`` of each other, and all those made
    while a call for the region is in flight, go out together in the next call."""

    def __init__(self, fetch: Fetch[V], window: float = 0.02):
        self._fetch = fetch
        self._window = window
        self._pending: dict[str, dict[str, asyncio.Future]] = {}
        self._in_flight: set[str] = set()

    async def get(self, region: str, instance_id: str) -> V | None:
        loop = asyncio.get_running_loop()
        pending = self._pending.get(region)
        if pending is None:
            pending = self._pending[region] = {}
            if region not in self._in_flight:
                loop.call_later(self._window, self._flush, region)
        future = pending.get(instance_id)
        if future is None:
            future = pending[instance_id] = loop.create_future()
        return await asyncio.shield(future)

    def _flush(self, region: str) -> None:
        batch = self._pending.pop(region, {})
        if batch:
            self._in_flight.add(region)
            asyncio.ensure_future(self._resolve(region, batch))

    async def _resolve(self, region: str, batch: dict[str, asyncio.Future]) -> None:
        try:
            found = await self._fetch(region, list(batch))
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
            self._in_flight.discard(region)
            self._flush(region)  # whatever queued up meanwhile


class Observer:
    def __init__(self, gateway: Ec2Gateway, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._gateway = gateway
        self._ttl = ttl
        self._clock = clock
        self._associations: Batcher[Association] = Batcher(gateway.describe_associations)
        self._states: Batcher[InstanceState] = Batcher(gateway.describe_instance_states)
        self._cache: dict[Target, tuple[float, Association | None]] = {}
        self._epoch: dict[Target, int] = defaultdict(int)

    def _store(self, target: Target, epoch: int, fetched: float, association: Association | None) -> None:
        if self._epoch[target] == epoch:  # no mutation since the describe began
            self._cache[target] = (fetched, association)

    async def association(self, target: Target, fresh: bool = False) -> Association | None:
        """The instance's current association, from a recent describe unless ``fresh``."""
        hit = self._cache.get(target)
        if hit is not None and not fresh and self._clock() - hit[0] < self._ttl:
            return hit[1]
        epoch, fetched = self._epoch[target], self._clock()
        association = await self._associations.get(target.region, target.instance_id)
        self._store(target, epoch, fetched, association)
        return association

    async def instance_state(self, target: Target) -> InstanceState:
        return await self._states.get(target.region, target.instance_id) or InstanceState.NOT_FOUND

    def invalidate(self, target: Target) -> None:
        """Called after each mutation of ``target``'s association."""
        self._epoch[target] += 1
        self._cache.pop(target, None)

    def forget(self, target: Target) -> None:
        self._cache.pop(target, None)
        self._epoch.pop(target, None)

    async def refresh(self, instances_by_region: dict[str, list[str]]) -> None:
        """Describe every listed instance: one call per region and 200 instances, whose tokens
        wait behind those of a user's change."""
        with at_priority(Priority.BACKGROUND):
            for region, instance_ids in instances_by_region.items():
                targets = [Target(region, instance_id) for instance_id in instance_ids]
                epochs, fetched = [self._epoch[t] for t in targets], self._clock()
                found = await self._gateway.describe_associations(region, instance_ids)
                for target, epoch in zip(targets, epochs):
                    self._store(target, epoch, fetched, found.get(target.instance_id))
