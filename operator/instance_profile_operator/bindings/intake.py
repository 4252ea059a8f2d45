"""Intake: bindings new to this replica are placed and described in bulk before their first reconcile.

A burst of new bindings (a GitOps sync, a fleet's children, adoption of existing associations,
the start-up listing) would otherwise be looked up by the workers themselves, never more per call
than there are workers. Intake takes them first. Each binding its policies admit is placed in the
account they decide; a denied one, or one whose verdict hinges on the instance's tags in several
accounts, costs no EC2 call here (its reconcile decides). Then:

* a watched new binding gets a look-ahead: the observer's batcher merges it with every other
  lookup of its account, region and namespace (200 instances per call), and the binding is queued
  as soon as its own lookup ends;
* the bindings listed at start-up (within ``LISTING_WINDOW``) and those known on standby get one
  batched refresh, those that need work (new, not Ready, or drifted while no replica watched)
  queued before the confirmation of the others.

Either way its reconcile finds the association observed. A binding intake holds is queued by
intake, not by its next watch event (its finalizer's, most often), so it is looked up once.
"""

from __future__ import annotations

import asyncio

from ..aws.observer import Observer
from ..aws.ratelimit import on_behalf_of
from ..core import status
from ..core.model import InvalidSpec, Target
from ..core.tenancy import Admitted, Tenancy
from ..runtime.workqueue import Priority, WorkQueue
from .bulk import BulkDescriber
from .registry import Key, Registry

ADDED_WINDOW = 0.02  # seconds: new bindings watched within it are looked up together
LISTING_WINDOW = 0.5  # seconds: bindings listed within it are described together


class Intake:
    def __init__(self, registry: Registry, tenancy: Tenancy, observer: Observer, bulk: BulkDescriber, queue: WorkQueue[Key]):
        self._registry = registry
        self._tenancy = tenancy
        self._observer = observer
        self._bulk = bulk
        self._queue = queue
        self._held: set[Key] = set()
        self._added: list[Key] = []
        self._listed: list[Key] = []
        self._adding: asyncio.TimerHandle | None = None
        self._listing = False

    def holds(self, key: Key) -> bool:
        """Whether intake will queue ``key`` itself (its watch events need not)."""
        return key in self._held

    def hold(self, key: Key) -> None:
        """Hold ``key`` until ``added`` (a binding known on standby, its finalizer on its way)."""
        self._held.add(key)

    def drop(self, key: Key) -> None:
        """Let ``key`` go unqueued (a binding gone while held)."""
        self._held.discard(key)

    def added(self, key: Key) -> None:
        """A binding new to this replica, watched: looked up ahead of its reconcile."""
        self._held.add(key)
        self._added.append(key)
        if self._adding is None:
            self._adding = asyncio.get_running_loop().call_later(ADDED_WINDOW, self._look_ahead)

    def listed(self, key: Key) -> None:
        """A binding of the start-up listing: described with those listed within ``LISTING_WINDOW``."""
        self._held.add(key)
        self._listed.append(key)
        if not self._listing:
            self._listing = True
            self._bulk.in_background(self._describe_listed(), "describing the listed bindings")

    def known(self, keys: list[Key]) -> None:
        """The bindings known on standby, when this replica takes the Lease: described at once."""
        self._held.update(keys)
        self._bulk.in_background(self._describe(keys), "describing the bindings known on standby")

    def confirmed(self, key: Key) -> bool:
        """The binding's status still holds: Ready for its generation, with the association EC2 shows."""
        binding = self._registry.get(key)
        target = self._registry.target(binding) if binding is not None else None
        return target is not None and status.still_true(binding.status, binding.generation, self._observer.observed_id(target))

    def stop(self) -> None:
        if self._adding is not None:
            self._adding.cancel()

    def _look_ahead(self) -> None:
        self._adding = None
        keys, self._added = self._added, []
        self._bulk.in_background(self._look_ahead_all(keys), "looking up new bindings")

    async def _look_ahead_all(self, keys: list[Key]) -> None:
        placed = self._place(keys)
        await asyncio.gather(*(self._look_then_queue(key, placed.get(key)) for key in keys))

    async def _look_then_queue(self, key: Key, target: Target | None) -> None:
        try:
            if target is not None:
                with on_behalf_of(key[0]):  # its namespace's lane and EC2 turn, as its reconcile's
                    await self._observer.look_ahead(target)
        finally:
            self._release(key)

    async def _describe_listed(self) -> None:
        try:
            while self._listed:
                await asyncio.sleep(LISTING_WINDOW)
                keys, self._listed = self._listed, []
                self._bulk.in_background(self._describe(keys), "describing the listed bindings")
        finally:
            self._listing = False

    async def _describe(self, keys: list[Key]) -> None:
        self._place(keys)
        await self._bulk.describe_then_queue(keys, Priority.USER, self.confirmed, queued=self._held.discard)

    def _place(self, keys: list[Key]) -> dict[Key, Target]:
        """Place each binding its policies admit without looking at the instance; their targets."""
        placed: dict[Key, Target] = {}
        for key in keys:
            binding = self._registry.get(key)
            if binding is None or binding.deleting:
                continue
            try:
                desired = binding.desired(self._registry.default_region)
            except InvalidSpec:
                continue
            admission = self._tenancy.admit(binding, desired)
            if isinstance(admission, Admitted):
                self._registry.place(key, admission.desired.target.account)
                placed[key] = admission.desired.target
        return placed

    def _release(self, key: Key) -> None:
        self._held.discard(key)
        self._queue.add(key, priority=Priority.USER)
