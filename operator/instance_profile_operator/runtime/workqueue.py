"""A delaying priority work queue with the semantics of client-go's: a key waits in the queue at
most once (the earliest due time and the highest priority win), is never processed by two
workers at once, and a key added while it is being processed is processed again afterwards.
Of the keys that are due, those of a user's change go before periodic re-checks, and follow-ups
of a change made go before both. Tenants (namespaces, by ``tenant_of``) share the workers fairly
(``fairshare.FairQueue``): they take turns, one key each, first among follow-ups and users'
changes, then among re-checks, and priority orders each tenant's own keys. A tenant flooding the
queue therefore delays another's change by one key per tenant at most, and its follow-ups, which
become changes of their own when the spec moved on meanwhile, cannot hold another's change back.
With ``tenant_limit``, a tenant never has more keys in process at once: the workers it leaves
free take another tenant's change the moment it comes, not when one of the flood's reconciles,
waiting for an EC2 token, ends."""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import math
import random
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Generic, Hashable, TypeVar

from ..core.fairshare import FairQueue

K = TypeVar("K", bound=Hashable)


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with jitter: in [d/2, d] for d = min(cap, base * 2**attempt)."""
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    return ceiling * (0.5 + rand() / 2)


def on_grid(now: float, delay: float, grid: float) -> float:
    """``delay`` stretched by less than ``grid`` so that ``now + delay`` is a multiple of ``grid``:
    keys requeued at about the same time come due together."""
    return math.ceil((now + delay) / grid) * grid - now


class Priority(enum.IntEnum):
    """Lower goes first: checks that finish a change already made (a few, quick, no mutating call),
    then work caused by a user's change, then periodic re-checks."""

    FOLLOW_UP = 0
    USER = 1
    BACKGROUND = 2

    @property
    def tier(self) -> int:
        """Tenants take turns within a tier; a lower tier goes first."""
        return int(self is Priority.BACKGROUND)


@dataclass(frozen=True)
class _Entry:
    due: float
    priority: Priority
    stamp: int  # heap items with another stamp are superseded


class QueueHooks:
    """What a queue reports, e.g. to metrics; these defaults report nothing."""

    def added(self) -> None:
        """A key entered the queue."""

    def started(self, waited: float) -> None:
        """A worker took a key that had been due for ``waited`` seconds."""

    def finished(self, worked: float) -> None:
        """A worker was done with a key after ``worked`` seconds."""


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic, hooks: QueueHooks = QueueHooks(),
                 tenant_of: Callable[[K], Hashable] = lambda key: None, tenant_limit: int | None = None):
        self._clock = clock
        self._hooks = hooks
        self._tenant_of = tenant_of
        self._tenant_limit = tenant_limit
        self._in_process: Counter[Hashable] = Counter()  # keys in process per tenant
        self._started: dict[K, float] = {}
        self._entries: dict[K, _Entry] = {}
        self._delayed: list[tuple[float, int, K]] = []  # heap by due time
        self._ready: FairQueue[tuple[float, int, K]] = FairQueue()  # due: (due, stamp, key)
        self._stamps = itertools.count()
        self._processing: set[K] = set()
        self._again: dict[K, tuple[float, Priority]] = {}  # added while processing
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def running(self) -> list[float]:
        """Seconds each key taken and not yet done has been in process, now."""
        now = self._clock()
        return [now - started for started in self._started.values()]

    def add(self, key: K, delay: float = 0.0, priority: Priority = Priority.USER) -> None:
        """Queue ``key``; if it is queued already, the earlier due time and higher priority win."""
        due = self._clock() + max(0.0, delay)
        if key in self._processing:
            earlier = self._again.get(key, (due, priority))
            self._again[key] = (min(due, earlier[0]), min(priority, earlier[1]))
            return
        queued = self._entries.get(key)
        if queued is not None:
            if queued.due <= due and queued.priority <= priority:
                return
            due, priority = min(due, queued.due), min(priority, queued.priority)
        else:
            self._hooks.added()
        entry = self._entries[key] = _Entry(due, priority, next(self._stamps))
        heapq.heappush(self._delayed, (due, entry.stamp, key))
        self._wakeup.set()

    def _current(self, key: K, stamp: int) -> _Entry | None:
        entry = self._entries.get(key)
        return entry if entry is not None and entry.stamp == stamp else None

    async def get(self) -> K:
        """The due key of the tenant whose turn it is, of the highest priority, earliest first; the
        caller must call ``done(key)`` when finished with it.

        It yields to the event loop first, even with keys ready: reconciles that find everything
        in memory never wait, and a worker going through a resync's 10,000 keys without yielding
        would hold the loop (watch events, a user's change, /metrics) until it had done them all."""
        await asyncio.sleep(0)
        while True:
            now = self._clock()
            while self._delayed and self._delayed[0][0] <= now:
                due, stamp, key = heapq.heappop(self._delayed)
                entry = self._current(key, stamp)
                if entry is not None:
                    self._ready.push((due, stamp, key), self._tenant_of(key), entry.priority.tier, (entry.priority, due, stamp))
            ready = self._ready.pop(lambda item: self._current(item[2], item[1]) is not None, self._below_limit)
            if ready is not None:
                due, _, key = ready
                del self._entries[key]
                self._processing.add(key)
                self._in_process[self._tenant_of(key)] += 1
                self._started[key] = now = self._clock()
                self._hooks.started(now - due)
                return key
            while self._delayed and self._current(self._delayed[0][2], self._delayed[0][1]) is None:
                heapq.heappop(self._delayed)  # superseded
            timeout = self._delayed[0][0] - now if self._delayed else None
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _below_limit(self, tenant: Hashable) -> bool:
        return self._tenant_limit is None or self._in_process[tenant] < self._tenant_limit

    def done(self, key: K) -> None:
        if key in self._processing:
            self._processing.remove(key)
            tenant = self._tenant_of(key)
            self._in_process[tenant] -= 1
            if not self._in_process[tenant]:
                del self._in_process[tenant]
            self._wakeup.set()  # its tenant may be below its limit again
        if key in self._started:
            self._hooks.finished(self._clock() - self._started.pop(key))
        if key in self._again:
            due, priority = self._again.pop(key)
            self.add(key, due - self._clock(), priority)

    def forget(self, key: K) -> None:
        """Drop a key that no longer exists (a pending retry of it is pointless)."""
        self._entries.pop(key, None)
        self._again.pop(key, None)


class KeyLocks(Generic[K]):
    """One asyncio.Lock per key, kept only while the key is held or waited for: a lock for each
    of 10,000 keys that are almost never contended would be memory for nothing."""

    def __init__(self) -> None:
        self._locks: dict[K, tuple[asyncio.Lock, list[int]]] = {}  # lock, [holders and waiters]

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]
