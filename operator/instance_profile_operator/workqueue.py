"""A delaying work queue with the semantics of client-go's: a key waits in the queue at most
once (the earliest due time wins), is never processed by two workers at once, and a key added
while it is being processed is processed again afterwards."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with jitter: in [d/2, d] for d = min(cap, base * 2**attempt)."""
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    return ceiling * (0.5 + rand() / 2)


class QueueHooks:
    """What a queue reports, e.g. to metrics; these defaults report nothing."""

    def added(self) -> None:
        """A key entered the queue."""

    def started(self, waited: float) -> None:
        """A worker took a key that had been due for ``waited`` seconds."""

    def finished(self, worked: float) -> None:
        """A worker was done with a key after ``worked`` seconds."""


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic, hooks: QueueHooks = QueueHooks()):
        self._clock = clock
        self._hooks = hooks
        self._started: dict[K, float] = {}
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self._processing: set[K] = set()
        self._again: dict[K, float] = {}  # added while processing
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def add(self, key: K, delay: float = 0.0) -> None:
        due = self._clock() + max(0.0, delay)
        if key in self._processing:
            self._again[key] = min(due, self._again.get(key, due))
            return
        if key in self._due and self._due[key] <= due:
            return
        if key not in self._due:
            self._hooks.added()
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        self._wakeup.set()

    async def get(self) -> K:
        """The next due key; the caller must call ``done(key)`` when finished with it."""
        while True:
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # superseded by an earlier due time
            timeout = None
            if self._heap:
                due, _, key = self._heap[0]
                wait = due - self._clock()
                if wait <= 0:
                    heapq.heappop(self._heap)
                    del self._due[key]
                    self._processing.add(key)
                    self._started[key] = now = self._clock()
                    self._hooks.started(now - due)
                    return key
                timeout = wait
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._started:
            self._hooks.finished(self._clock() - self._started.pop(key))
        if key in self._again:
            due = self._again.pop(key)
            self.add(key, due - self._clock())

    def forget(self, key: K) -> None:
        """Drop a key that no longer exists (a pending retry of it is pointless)."""
        self._due.pop(key, None)
        self._again.pop(key, None)
