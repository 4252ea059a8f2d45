"""Batcher (merged EC2 lookups) and the pure EC2 helpers chunks() and current_associations()."""

from __future__ import annotations

import asyncio

import pytest

from instance_profile_operator.ec2 import MAX_FILTER_VALUES, chunks, current_associations
from instance_profile_operator.model import Association, AssociationState
from instance_profile_operator.observer import Batcher

TIMEOUT = 1.0  # real seconds; only reached when a test fails


class FakeFetch:
    """Records every call; answers from ``known`` or raises ``error``."""

    def __init__(self, known: dict[str, str] | None = None, error: Exception | None = None):
        self.known = known or {}
        self.error = error
        self.calls: list[tuple[str, list[str]]] = []

    async def __call__(self, region: str, instance_ids: list[str]) -> dict[str, str]:
        self.calls.append((region, list(instance_ids)))
        if self.error is not None:
            raise self.error
        return {i: self.known[i] for i in instance_ids if i in self.known}


async def gather(*awaitables, return_exceptions: bool = False):
    return await asyncio.wait_for(asyncio.gather(*awaitables, return_exceptions=return_exceptions), TIMEOUT)


async def test_concurrent_gets_in_one_region_make_one_fetch():
    fetch = FakeFetch({"i-1": "one", "i-2": "two", "i-3": "three"})
    batcher = Batcher(fetch, window=0.01)

    results = await gather(*(batcher.get("eu-west-1", i) for i in ("i-1", "i-2", "i-3")))

    assert results == ["one", "two", "three"]
    assert len(fetch.calls) == 1
    region, ids = fetch.calls[0]
    assert region == "eu-west-1"
    assert sorted(ids) == ["i-1", "i-2", "i-3"]


async def test_same_id_twice_is_fetched_once():
    fetch = FakeFetch({"i-1": "one"})
    batcher = Batcher(fetch, window=0.01)
    assert await gather(batcher.get("r", "i-1"), batcher.get("r", "i-1")) == ["one", "one"]
    assert fetch.calls == [("r", ["i-1"])]


async def test_regions_are_fetched_separately():
    fetch = FakeFetch({"i-1": "one", "i-2": "two"})
    batcher = Batcher(fetch, window=0.01)

    results = await gather(batcher.get("eu-west-1", "i-1"), batcher.get("us-east-1", "i-2"),
                           batcher.get("eu-west-1", "i-2"))

    assert results == ["one", "two", "two"]
    by_region = {region: sorted(ids) for region, ids in fetch.calls}
    assert len(fetch.calls) == 2
    assert by_region == {"eu-west-1": ["i-1", "i-2"], "us-east-1": ["i-2"]}


async def test_fetch_error_reaches_every_waiter():
    boom = RuntimeError("EC2 is down")
    fetch = FakeFetch(error=boom)
    batcher = Batcher(fetch, window=0.01)

    results = await gather(*(batcher.get("r", i) for i in ("i-1", "i-2", "i-3")), return_exceptions=True)

    assert results == [boom, boom, boom]
    assert len(fetch.calls) == 1


async def test_missing_ids_resolve_to_none():
    fetch = FakeFetch({"i-1": "one"})
    batcher = Batcher(fetch, window=0.01)
    assert await gather(batcher.get("r", "i-1"), batcher.get("r", "i-missing")) == ["one", None]


async def test_later_get_starts_a_new_batch():
    fetch = FakeFetch({"i-1": "one", "i-2": "two"})
    batcher = Batcher(fetch, window=0.01)
    assert await gather(batcher.get("r", "i-1")) == ["one"]
    assert await gather(batcher.get("r", "i-2")) == ["two"]
    assert fetch.calls == [("r", ["i-1"]), ("r", ["i-2"])]


async def test_a_cancelled_waiter_does_not_break_the_batch():
    fetch = FakeFetch({"i-1": "one", "i-2": "two"})
    batcher = Batcher(fetch, window=0.01)
    leaving = asyncio.ensure_future(batcher.get("r", "i-1"))
    staying = asyncio.ensure_future(batcher.get("r", "i-2"))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await asyncio.wait_for(staying, TIMEOUT) == "two"
    assert len(fetch.calls) == 1


# --------------------------------------------------------------------------------------------
# current_associations() and chunks()
# --------------------------------------------------------------------------------------------

S = AssociationState


def assoc(instance: str, state: AssociationState, association_id: str) -> Association:
    return Association(association_id, instance, "arn:aws:iam::123456789012:instance-profile/web", "AIPA", state)


def test_current_associations_ignores_disassociated():
    history = assoc("i-1", S.DISASSOCIATED, "iip-old")
    assert current_associations([history]) == {}


@pytest.mark.parametrize(
    "order",
    [pytest.param("leaving-first", id="leaving-first"), pytest.param("live-first", id="live-first")],
)
def test_current_associations_prefers_associated_over_disassociating(order):
    live = assoc("i-1", S.ASSOCIATED, "iip-new")
    leaving = assoc("i-1", S.DISASSOCIATING, "iip-old")
    items = [leaving, live] if order == "leaving-first" else [live, leaving]
    assert current_associations(items) == {"i-1": live}


def test_current_associations_prefers_associating_over_disassociating():
    live = assoc("i-1", S.ASSOCIATING, "iip-new")
    leaving = assoc("i-1", S.DISASSOCIATING, "iip-old")
    assert current_associations([leaving, live]) == {"i-1": live}
    assert current_associations([live, leaving]) == {"i-1": live}


def test_current_associations_per_instance():
    a = assoc("i-1", S.ASSOCIATED, "iip-1")
    b = assoc("i-2", S.DISASSOCIATING, "iip-2")
    c = assoc("i-3", S.DISASSOCIATED, "iip-3")
    d = assoc("i-2", S.DISASSOCIATED, "iip-4")
    assert current_associations([a, b, c, d]) == {"i-1": a, "i-2": b}


def test_chunks_split_at_the_filter_limit():
    ids = [f"i-{n:08x}" for n in range(450)]
    parts = list(chunks(ids))
    assert MAX_FILTER_VALUES == 200
    assert [len(p) for p in parts] == [200, 200, 50]
    assert [i for p in parts for i in p] == ids


@pytest.mark.parametrize(("count", "sizes"), [(0, []), (1, [1]), (200, [200]), (201, [200, 1])])
def test_chunks_edges(count, sizes):
    assert [len(p) for p in chunks([f"i-{n}" for n in range(count)])] == sizes


async def test_lookups_made_while_a_fetch_is_in_flight_go_out_together_next():
    release = asyncio.Event()
    calls: list[list[str]] = []

    async def slow_fetch(region: str, instance_ids: list[str]) -> dict[str, str]:
        calls.append(sorted(instance_ids))
        if len(calls) == 1:
            await release.wait()
        return {i: i.upper() for i in instance_ids}

    batcher = Batcher(slow_fetch, window=0.001)
    first = asyncio.ensure_future(batcher.get("us-east-1", "i-a"))
    while not calls:  # the first fetch has started and is held
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher.get("us-east-1", i)) for i in ("i-b", "i-c", "i-d")]
    await asyncio.sleep(0.01)  # far beyond the window: without in-flight merging these would fetch now
    assert calls == [["i-a"]]
    release.set()
    assert await gather(first, *later) == ["I-A", "I-B", "I-C", "I-D"]
    assert calls == [["i-a"], ["i-b", "i-c", "i-d"]]
