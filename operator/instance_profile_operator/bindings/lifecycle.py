"""The operator's finalizer on each binding: put on before anything may touch EC2 for the binding,
taken off once its deletion has been handled (``Finalizer``).

Adding patches the binding against the version its watch event showed (or, after a change, the
version read), so nobody else's finalizer is lost; one gone or being deleted is left alone. A
deletion runs until it succeeds, each attempt after the delay the last one asked for (``RetryLater``)
or a capped backoff (anything else), reading the binding afresh every time; a deletion in progress
is one task per binding, whatever number of watch events its status writes bring.
"""

from __future__ import annotations

import asyncio
import logging

from ..core.api import FINALIZER
from ..core.model import Binding
from ..kube.writer import KubeWriter
from ..runtime.workqueue import backoff
from ..settings import Settings
from .finalizer import Finalizer, RetryLater
from .intake import Intake
from .registry import Key, Registry

log = logging.getLogger(__name__)


ADDERS = 8  # finalizers added at once: half the writer's threads, the rest for status

Seen = tuple[str, tuple[str, ...]]  # a binding's resource version and finalizers, as a watch event showed them


class Lifecycle:
    def __init__(self, settings: Settings, writer: KubeWriter, finalizer: Finalizer, registry: Registry, intake: Intake):
        self._settings = settings
        self._writer = writer
        self._finalizer = finalizer
        self._registry = registry
        self._intake = intake
        # Bindings awaiting the finalizer: a few bytes each, taken in turn by ADDERS tasks (not a task
        # each: 10,000 bindings created at once would be 10,000 tasks waiting for the writer).
        self._awaiting: dict[Key, Seen | None] = {}
        self._attempts: dict[Key, int] = {}
        self._busy: set[Key] = set()
        self._turns: asyncio.Queue[Key] = asyncio.Queue()
        self._adders: list[asyncio.Task] = []
        self._deleting: dict[Key, asyncio.Task] = {}

    def add(self, key: Key, seen: Seen | None = None) -> None:
        """Put the finalizer on the binding ``key`` (it has none and is not being deleted); ``seen``
        spares a read. Intake looks the binding up and queues it once that is done."""
        if key in self._awaiting:
            self._awaiting[key] = seen  # the newest event's
            return
        self._intake.hold(key)
        self._awaiting[key] = seen
        self._turns.put_nowait(key)
        if not self._adders:
            self._adders = [asyncio.create_task(self._add_in_turn(), name=f"finalizer-{n}") for n in range(ADDERS)]

    def delete(self, key: Key) -> None:
        """Handle the deletion of the binding ``key`` (it is being deleted and has the finalizer)."""
        if key not in self._deleting:
            self._deleting[key] = asyncio.create_task(self._delete(key), name=f"finalize-{key[0]}/{key[1]}")

    def forget(self, key: Key) -> None:
        """The binding is gone: nothing more to do for it."""
        if key in self._awaiting:
            del self._awaiting[key]
            self._attempts.pop(key, None)
            self._intake.drop(key)
        task = self._deleting.pop(key, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        tasks = [*self._adders, *self._deleting.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _add_in_turn(self) -> None:
        while True:
            key = await self._turns.get()
            if key not in self._awaiting or key in self._busy:
                continue  # forgotten meanwhile, or an attempt is under way (it tries again itself)
            self._busy.add(key)
            try:
                added = await self._added(key, self._awaiting[key])
            finally:
                self._busy.discard(key)
            if key not in self._awaiting:
                continue
            if added:
                del self._awaiting[key]
                self._done_adding(key)
            else:  # again once the watch has had time to bring what the binding is now
                attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
                delay = backoff(attempt - 1, self._settings.retry_base_seconds, self._settings.retry_max_seconds)
                asyncio.get_running_loop().call_later(delay, self._turns.put_nowait, key)

    async def _added(self, key: Key, seen: Seen | None) -> bool:
        """One attempt: True once the finalizer is on, or no longer needed (gone, or being deleted)."""
        binding = self._registry.get(key)
        if binding is None or binding.finalized or binding.deleting:
            return True
        try:
            finalized = await self._writer.add_finalizer(binding, seen)
        except Exception as error:  # the API server, or a bug: tried again
            log.warning("%s: adding the finalizer: %s: %s", binding.ref, type(error).__name__, error)
            return False
        if finalized is None:  # gone, re-created, being deleted or changed since it was read
            self._awaiting[key] = None  # read it afresh next time
            return False
        if self._registry.get(key) is not None:
            self._registry.upsert(finalized)
        return True

    def _done_adding(self, key: Key) -> None:
        self._attempts.pop(key, None)
        self._intake.added(key)  # looked up and queued, whatever became of it

    async def _delete(self, key: Key) -> None:
        retry = 0
        try:
            while not await self._finalized(key, retry):
                retry += 1
        finally:
            if self._deleting.get(key) is asyncio.current_task():
                del self._deleting[key]

    async def _finalized(self, key: Key, retry: int) -> bool:
        """One attempt (the ``retry``-th again): True once done, False after waiting to try again."""
        try:
            body = await self._writer.binding_body(*key)
            meta = (body or {}).get("metadata", {})
            if body is None or not meta.get("deletionTimestamp") or FINALIZER not in (meta.get("finalizers") or []):
                return True  # gone, or no longer ours to finalize
            await self._finalizer.finalize(body, retry)
            await self._writer.remove_finalizer(Binding.from_body(body))
            return True
        except RetryLater as later:
            delay = later.delay
            log.info("%s/%s: deletion: %s; trying again in %.1f s", *key, later, delay)
        except Exception:  # the API server, or a bug: say so, back off, never give up
            delay = backoff(retry, self._settings.retry_base_seconds, self._settings.retry_max_seconds)
            log.error("%s/%s: deletion failed (attempt %d); trying again in %.1f s", *key, retry + 1, delay,
                      exc_info=retry == 0)
        await asyncio.sleep(delay)
        return False
