"""Bulk description: the resync, and the bindings listed at start-up, each account and region on its own.

``BulkDescriber`` describes the instances of many bindings in one batched pass per account and
region (``Observer.refresh``, places concurrently) and queues each place's bindings as soon as
its describe ends, failed or not: a failing or slow place holds no other. A place that failed
is counted (``ipo_resync_failures_total``) and its bindings are queued all the same; their
reconciles find its outage at once and show the fault in their status. When a failing place
answers again, its bindings are queued at once rather than left to their failure backoff. Its
passes run in the background, so a slow place does not hold the next resync either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Coroutine

from ..aws.observer import Observer
from ..core.model import Place
from ..runtime.metrics import Metrics
from ..runtime.workqueue import Priority, WorkQueue
from .outcomes import Outcomes
from .registry import Key, Registry

log = logging.getLogger(__name__)


class BulkDescriber:
    def __init__(self, registry: Registry, observer: Observer, queue: WorkQueue[Key], outcomes: Outcomes, metrics: Metrics):
        self._registry = registry
        self._observer = observer
        self._queue = queue
        self._outcomes = outcomes
        self._metrics = metrics
        self._tasks: set[asyncio.Task] = set()

    async def describe_then_queue(self, keys: list[Key], priority: Priority,
                                  confirmed: Callable[[Key], bool] = lambda key: False,
                                  queued: Callable[[Key], None] = lambda key: None) -> None:
        """Describe the instances of ``keys`` and queue them at ``priority``, each place's as soon
        as its describe ends (``queued(key)`` told of each); a key whose status the describe
        ``confirmed`` goes at ``BACKGROUND``, after those that need work. A resync (``BACKGROUND``)
        leaves out the bindings waiting out a failure's backoff, and the places an earlier pass
        still describes; any other pass describes such a place once the earlier pass is done with
        it, so that every key is queued as observed."""
        by_place = self._keys_by_place(keys)
        resync = priority is Priority.BACKGROUND

        def described(place: Place | None, fault: Exception | None) -> None:
            if place is not None and fault is not None:
                log.warning("could not describe the instances of %d bindings in %s: %s", len(by_place.get(place, ())), _where(place), fault)
                self._metrics.resync_failed(place)
            for key in by_place.pop(place, ()):
                if not (resync and self._outcomes.failing(key)):
                    queued(key)
                    self._queue.add(key, priority=Priority.BACKGROUND if confirmed(key) else priority)

        described(None, None)  # bindings that name no instance
        try:
            busy = await self._observer.refresh(self._registry.instances_by_place(keys), described, wait=not resync)
        finally:  # a bug or a cancellation loses no binding; a busy place's bindings wait for the next resync
            for place in [*by_place]:
                if not (resync and place in busy):
                    described(place, None)

    def recovered(self, place: Place) -> None:
        """A failing account and region answers again: its bindings need not wait out their backoff."""
        log.info("%s answers again", _where(place))
        for key in self._keys_by_place(self._registry.keys()).get(place, ()):
            self._queue.add(key, priority=Priority.BACKGROUND)

    def in_background(self, describing: Coroutine[Any, Any, None], what: str) -> None:
        """Run a pass without waiting for it; an exception (a bug) is logged, never kept."""
        task = asyncio.create_task(describing, name=what)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._ended(done, what))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def _ended(self, task: asyncio.Task, what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a bug must not end drift detection for good
            log.error("%s failed; trying again next interval", what, exc_info=task.exception())

    def _keys_by_place(self, keys: list[Key]) -> dict[Place | None, list[Key]]:
        places: dict[Place | None, list[Key]] = {}
        for key in keys:
            binding = self._registry.get(key)
            target = self._registry.target(binding) if binding is not None else None
            places.setdefault(target.place if target is not None else None, []).append(key)
        return places


def _where(place: Place) -> str:
    account, region = place
    return f"{region} through {account}" if account else f"{region} (the operator's own account)"
