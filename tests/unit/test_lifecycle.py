"""The finalizer's lifecycle: added before anything touches EC2, retried until it is on; a deletion
run until it succeeds, with the delay each attempt asks for, then the finalizer taken off."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from instance_profile_operator.bindings.finalizer import RetryLater
from instance_profile_operator.bindings.lifecycle import ADDERS, Lifecycle
from instance_profile_operator.bindings.registry import Registry
from instance_profile_operator.core.api import FINALIZER
from instance_profile_operator.core.model import Binding
from instance_profile_operator.settings import Settings

from ..support.waiting import until

KEY = ("team", "web")
SETTINGS = Settings(region="us-east-1", retry_base_seconds=0.01, retry_max_seconds=0.02)


def body(finalized: bool = True, deleting: bool = False, uid: str = "u-1") -> dict:
    meta = {"namespace": "team", "name": "web", "uid": uid, "generation": 1, "finalizers": [FINALIZER] if finalized else []}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    return {"metadata": meta, "spec": {"instanceId": "i-0001", "iamInstanceProfile": {"name": "web"}}, "status": {}}


class Writer:
    """The API server's side: the binding's body as it is now; whose finalizer was added or removed."""

    def __init__(self, now: dict | None = None, refusals: int = 0, failures: int = 0):
        self.now = now
        self.refusals, self.failures = refusals, failures  # add_finalizer: changed meanwhile, then an API error
        self.added = self.removed = 0
        self.seen: list = []

    async def binding_body(self, namespace: str, name: str) -> dict | None:
        return self.now

    async def add_finalizer(self, binding: Binding, seen=None) -> Binding | None:
        self.seen.append(seen)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the API server is away")
        if self.refusals:
            self.refusals -= 1
            return None
        self.added += 1
        return dataclasses.replace(binding, finalized=True)

    async def remove_finalizer(self, binding: Binding) -> None:
        self.removed += 1
        self.now = None


class Finalizer:
    """Asks to be called again ``asks`` times, then raises ``raises`` once, then succeeds; records each retry count."""

    def __init__(self, asks: int = 0, raises: int = 0):
        self.asks, self.raises = asks, raises
        self.retries: list[int] = []

    async def finalize(self, body: dict, retry: int) -> None:
        self.retries.append(retry)
        if self.asks:
            self.asks -= 1
            raise RetryLater("association iip-1 is associating; waiting until it settles", 0.01)
        if self.raises:
            self.raises -= 1
            raise RuntimeError("a bug")


class Intake:
    """Holds what the lifecycle holds; records what it hands back to be looked up and queued."""

    def __init__(self) -> None:
        self.held: set = set()
        self.released: list = []

    def hold(self, key) -> None:
        self.held.add(key)

    def added(self, key) -> None:
        self.held.discard(key)
        self.released.append(key)

    def drop(self, key) -> None:
        self.held.discard(key)


def make(writer: Writer, known: dict | None, finalizer: Finalizer | None = None) -> tuple[Lifecycle, Registry, Intake]:
    registry, intake = Registry("us-east-1"), Intake()
    if known is not None:
        registry.upsert(Binding.from_body(known))
    return Lifecycle(SETTINGS, writer, finalizer or Finalizer(), registry, intake), registry, intake  # type: ignore[arg-type]


async def test_the_finalizer_is_added_once_then_intake_looks_the_binding_up():
    writer = Writer()
    life, registry, intake = make(writer, body(finalized=False))
    life.add(KEY)
    life.add(KEY)  # another event of the same binding meanwhile
    assert KEY in intake.held
    await until(lambda: intake.released == [KEY])
    assert writer.added == 1 and registry.get(KEY).finalized


async def test_a_burst_awaiting_the_finalizer_takes_a_few_tasks_not_one_each():
    writer = Writer()
    registry, intake = Registry("us-east-1"), Intake()
    life = Lifecycle(SETTINGS, writer, Finalizer(), registry, intake)  # type: ignore[arg-type]
    for n in range(1000):
        registry.upsert(Binding.from_body({**body(finalized=False), "metadata": {**body(finalized=False)["metadata"], "name": f"b-{n}"}}))
        life.add(("team", f"b-{n}"), (str(n), ()))
    await asyncio.sleep(0)
    assert sum(task.get_name().startswith("finalizer-") for task in asyncio.all_tasks()) == ADDERS
    await until(lambda: len(intake.released) == 1000)
    assert writer.added == 1000 and writer.seen[0] == ("0", ())  # the watch event's version: no read first
    await life.stop()


async def test_adding_is_tried_again_when_the_binding_changed_meanwhile_or_the_api_server_failed():
    writer = Writer(refusals=2, failures=1)
    life, registry, intake = make(writer, body(finalized=False))
    life.add(KEY)
    await until(lambda: intake.released == [KEY])
    assert writer.added == 1 and registry.get(KEY).finalized


async def test_adding_stops_for_a_binding_gone_or_being_deleted_meanwhile():
    writer = Writer(refusals=1000)
    life, registry, intake = make(writer, body(finalized=False))
    life.add(KEY)
    await until(lambda: len(writer.seen) >= 2)  # refused, then tried again
    registry.upsert(Binding.from_body(body(finalized=False, deleting=True)))  # what the watch brings
    await until(lambda: intake.released == [KEY])
    assert writer.added == 0


async def test_a_binding_gone_while_awaiting_the_finalizer_is_let_go_unqueued():
    writer = Writer(refusals=1000)
    life, _, intake = make(writer, body(finalized=False))
    life.add(KEY)
    await until(lambda: len(writer.seen) >= 1)
    life.forget(KEY)
    assert intake.held == set() and intake.released == []  # nothing to look up or reconcile
    await life.stop()


async def test_a_deletion_runs_once_however_many_events_then_the_finalizer_comes_off():
    writer, finalizer = Writer(now=body(deleting=True)), Finalizer()
    life, _, _ = make(writer, None, finalizer=finalizer)
    for _ in range(5):
        life.delete(KEY)
    await until(lambda: writer.removed == 1)
    assert finalizer.retries == [0]


async def test_a_deletion_is_retried_as_asked_and_after_an_error_with_the_retry_counted():
    writer, finalizer = Writer(now=body(deleting=True)), Finalizer(asks=2, raises=1)
    life, _, _ = make(writer, None, finalizer=finalizer)
    life.delete(KEY)
    await until(lambda: writer.removed == 1)
    assert finalizer.retries == [0, 1, 2, 3]


@pytest.mark.parametrize("now", [None, body(deleting=False), body(finalized=False, deleting=True)],
                         ids=["gone", "not-deleted", "finalizer-gone"])
async def test_a_deletion_of_a_binding_not_ours_to_finalize_any_more_calls_nothing(now):
    writer, finalizer = Writer(now=now), Finalizer()
    life, _, _ = make(writer, None, finalizer=finalizer)
    life.delete(KEY)
    await until(lambda: not life._deleting)
    assert finalizer.retries == [] and writer.removed == 0


async def test_forgetting_a_binding_ends_its_deletion():
    writer, finalizer = Writer(now=body(deleting=True)), Finalizer(asks=1000)
    life, _, _ = make(writer, None, finalizer=finalizer)
    life.delete(KEY)
    await until(lambda: len(finalizer.retries) >= 2)
    deletion = life._deleting[KEY]
    life.forget(KEY)
    await asyncio.gather(deletion, return_exceptions=True)
    assert deletion.cancelled() and writer.removed == 0 and not life._deleting
