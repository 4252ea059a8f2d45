"""Batcher (merged EC2 lookups), Outages and Observer.refresh (each account and region on its own), and the pure
EC2 helpers chunks() and current_associations()."""

from __future__ import annotations

import asyncio

import pytest

from instance_profile_operator.aws.ec2 import MAX_FILTER_VALUES, chunks, current_associations
from instance_profile_operator.core.faults import AwsFault, FaultKind
from instance_profile_operator.core.model import Association, AssociationState, Place, Target
from instance_profile_operator.aws.observer import Batcher, Observer, Outages
from instance_profile_operator.aws.ratelimit import current_tenant, on_behalf_of

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


# --------------------------------------------------------------------------------------------
# Outages: a failing account or region answers at once, and is tried again one call at a time
# --------------------------------------------------------------------------------------------

PLACE, OTHER_PLACE = ("", "us-east-1"), ("arn:aws:iam::222233334444:role/ipo", "us-east-1")
DENIED = AwsFault(FaultKind.ACCESS_DENIED, "UnauthorizedOperation", "not allowed")


def outages(**kwargs) -> Outages:
    return Outages(base=1.0, cap=8.0, rand=lambda: 1.0, **kwargs)  # no jitter: delays 1, 2, 4, 8, 8 s


def test_a_place_without_failures_is_never_held():
    assert outages().admit(PLACE, 0.0) is None


def test_a_failed_place_answers_with_its_fault_until_its_retry_then_lets_one_call_try():
    book = outages()
    book.failed(PLACE, DENIED, now=10.0)
    fault = book.admit(PLACE, 10.5)
    assert fault == DENIED and fault is not DENIED  # a copy: raising it does not grow the stored one's traceback
    assert book.admit(OTHER_PLACE, 10.5) is None  # other places are not held
    assert book.admit(PLACE, 11.0) is None  # the retry
    assert book.admit(PLACE, 100.0) == DENIED  # one at a time: the others still fail at once


@pytest.mark.parametrize(("failures", "retry_after"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 8.0)])
def test_retries_of_a_failing_place_back_off_up_to_the_cap(failures, retry_after):
    book = outages()
    for _ in range(failures):
        book.failed(PLACE, DENIED, now=0.0)
    assert book.admit(PLACE, retry_after - 0.01) is not None
    assert book.admit(PLACE, retry_after) is None


def test_a_success_ends_the_outage_and_says_so_once():
    recovered = []
    book = outages(recovered=recovered.append)
    book.succeeded(PLACE)
    assert recovered == []  # it was not failing
    book.failed(PLACE, DENIED, now=0.0)
    assert PLACE in book
    book.succeeded(PLACE)
    assert recovered == [PLACE] and PLACE not in book and book.admit(PLACE, 0.0) is None


def test_throttling_is_no_outage_and_ends_one_since_ec2_answered():
    recovered = []
    book = outages(recovered=recovered.append)
    throttled = AwsFault(FaultKind.THROTTLED, "RequestLimitExceeded", "Request limit exceeded.")
    book.failed(PLACE, throttled, now=0.0)
    assert PLACE not in book and book.admit(PLACE, 0.0) is None
    book.failed(PLACE, DENIED, now=0.0)
    assert book.admit(PLACE, 1.0) is None  # the retry ...
    book.failed(PLACE, throttled, now=1.0)  # ... reached EC2, which only throttled it
    assert PLACE not in book and recovered == [PLACE]


async def test_a_failing_instance_lookup_holds_no_association_lookup(clock):
    class Gateway:
        async def describe_instances(self, region, ids, account=""):
            raise DENIED

        async def describe_associations(self, region, ids, account=""):
            return {}

    observer = Observer(Gateway(), clock=clock)
    target = Target("us-east-1", "i-1", "")
    with pytest.raises(AwsFault):
        await observer.instance(target)
    assert await observer.association(target) is None  # described, not failed at once


async def test_after_a_failed_fetch_lookups_of_that_place_fail_at_once_without_a_call(clock):
    fetch = FakeFetch(error=DENIED)
    batcher = Batcher(fetch, window=0.001, outages=outages(), clock=clock)
    assert await gather(batcher.get(PLACE, "i-1"), return_exceptions=True) == [DENIED]
    assert await gather(batcher.get(PLACE, "i-2"), batcher.get(PLACE, "i-3"), return_exceptions=True) == [DENIED, DENIED]
    assert len(fetch.calls) == 1
    fetch.error = None
    fetch.known = {"i-2": "two"}
    clock.advance(1.0)
    assert await gather(batcher.get(PLACE, "i-2")) == ["two"]  # the retry, and the place is back
    assert await gather(batcher.get(PLACE, "i-3")) == [None] and len(fetch.calls) == 3


async def test_while_a_slow_place_is_tried_again_its_other_lookups_fail_at_once_and_other_places_go_on(clock):
    release = asyncio.Event()

    async def fetch(place, instance_ids):
        if place == PLACE:
            await release.wait()  # a place whose calls time out slowly
            raise DENIED
        return {i: i.upper() for i in instance_ids}

    book = outages()
    book.failed(PLACE, DENIED, now=clock())
    clock.advance(1.0)
    batcher = Batcher(fetch, window=0.001, outages=book, clock=clock)
    trying = asyncio.ensure_future(batcher.get(PLACE, "i-1"))  # the retry, held
    await asyncio.sleep(0.01)
    assert await gather(batcher.get(PLACE, "i-2"), return_exceptions=True) == [DENIED]  # not held behind it
    assert await gather(batcher.get(OTHER_PLACE, "i-3")) == ["I-3"]
    release.set()
    with pytest.raises(AwsFault):
        await asyncio.wait_for(trying, TIMEOUT)


# --------------------------------------------------------------------------------------------
# Observer.refresh: each place on its own
# --------------------------------------------------------------------------------------------


class PlacesGateway:
    """Describes answer per account: ``failing`` accounts raise, ``held`` ones wait for ``release``."""

    def __init__(self, failing: dict[str, Exception] | None = None, held: set[str] = frozenset()):
        self.failing = failing or {}
        self.held = held
        self.release = asyncio.Event()
        self.calls: list[Place] = []

    async def describe_associations(self, region, instance_ids, account=""):
        self.calls.append((account, region))
        if account in self.held:
            await self.release.wait()
        if account in self.failing:
            raise self.failing[account]
        return {i: Association(f"iip-{i}", i, "arn:aws:iam::123456789012:instance-profile/web", "AIPA", AssociationState.ASSOCIATED)
                for i in instance_ids}


async def test_a_refresh_reports_each_place_and_keeps_what_the_healthy_ones_found(clock):
    bug = RuntimeError("not an AWS fault")
    gateway = PlacesGateway(failing={OTHER_PLACE[0]: DENIED, "arn:aws:iam::1:role/buggy": bug})
    observer = Observer(gateway, ttl=60, clock=clock)
    buggy = ("arn:aws:iam::1:role/buggy", "eu-west-1")
    reported: dict = {}
    busy = await asyncio.wait_for(observer.refresh({PLACE: ["i-1"], OTHER_PLACE: ["i-2"], buggy: ["i-3"]},
                                                   lambda place, fault: reported.setdefault(place, fault)), TIMEOUT)
    assert busy == set() and reported == {PLACE: None, OTHER_PLACE: DENIED, buggy: bug}
    assert (await observer.association(Target("us-east-1", "i-1"))).association_id == "iip-i-1"
    assert OTHER_PLACE in observer.outages and buggy in observer.outages and PLACE not in observer.outages


async def test_a_slow_place_holds_neither_the_others_report_nor_a_later_refresh(clock):
    gateway = PlacesGateway(failing={OTHER_PLACE[0]: DENIED}, held={OTHER_PLACE[0]})
    observer = Observer(gateway, ttl=60, clock=clock)
    reported: list = []
    first = asyncio.ensure_future(observer.refresh({PLACE: ["i-1"], OTHER_PLACE: ["i-2"]}, lambda p, f: reported.append((p, f))))
    while reported != [(PLACE, None)]:
        await asyncio.sleep(0.001)
    busy = await asyncio.wait_for(observer.refresh({PLACE: ["i-1"], OTHER_PLACE: ["i-2"]}, lambda p, f: reported.append((p, f))), TIMEOUT)
    assert busy == {OTHER_PLACE} and reported == [(PLACE, None), (PLACE, None)]  # not described twice at once
    gateway.release.set()
    assert await asyncio.wait_for(first, TIMEOUT) == set()
    assert reported[-1] == (OTHER_PLACE, DENIED) and gateway.calls.count(OTHER_PLACE) == 1


async def test_a_waiting_refresh_describes_a_busy_place_once_the_earlier_refresh_ends(clock):
    gateway = PlacesGateway(held={OTHER_PLACE[0]})
    observer = Observer(gateway, ttl=60, clock=clock)
    reported: list = []
    first = asyncio.ensure_future(observer.refresh({OTHER_PLACE: ["i-1"]}, lambda p, f: reported.append(("first", p))))
    while gateway.calls != [OTHER_PLACE]:
        await asyncio.sleep(0.001)
    second = asyncio.ensure_future(observer.refresh({PLACE: ["i-3"], OTHER_PLACE: ["i-2"]}, lambda p, f: reported.append(("second", p)),
                                                    wait=True))
    while reported != [("second", PLACE)]:  # another place is not held meanwhile
        await asyncio.sleep(0.001)
    assert gateway.calls == [OTHER_PLACE, PLACE]  # not described twice at once
    gateway.release.set()
    assert await asyncio.wait_for(second, TIMEOUT) == set() and await asyncio.wait_for(first, TIMEOUT) == set()
    assert reported[1:] == [("first", OTHER_PLACE), ("second", OTHER_PLACE)] and gateway.calls.count(OTHER_PLACE) == 2
    found = await observer.association(Target(OTHER_PLACE[1], "i-2", OTHER_PLACE[0]))
    assert found is not None and gateway.calls.count(OTHER_PLACE) == 2  # the waiting refresh found it


async def test_a_refresh_of_a_place_in_an_outage_makes_no_call_until_its_retry(clock):
    gateway = PlacesGateway(failing={OTHER_PLACE[0]: DENIED})
    observer = Observer(gateway, ttl=60, clock=clock)
    reported: list = []
    for _ in range(2):
        await observer.refresh({OTHER_PLACE: ["i-2"]}, lambda p, f: reported.append(f))
    assert reported == [DENIED, DENIED] and gateway.calls == [OTHER_PLACE]
    clock.advance(60)
    del gateway.failing[OTHER_PLACE[0]]
    await observer.refresh({OTHER_PLACE: ["i-2"]}, lambda p, f: reported.append(f))
    assert reported[-1] is None and len(gateway.calls) == 2 and OTHER_PLACE not in observer.outages


async def test_one_namespaces_lookups_never_wait_for_another_namespaces_call_in_flight():
    release = asyncio.Event()
    calls: list[tuple[object, list[str]]] = []

    async def fetch(place, instance_ids):
        calls.append((current_tenant(), sorted(instance_ids)))
        if current_tenant() == "flood":
            await release.wait()
        return {i: i.upper() for i in instance_ids}

    batcher = Batcher(fetch, window=0.001)

    async def get(tenant: str, instance_id: str):
        with on_behalf_of(tenant):
            return await batcher.get(PLACE, instance_id)

    flood = [asyncio.ensure_future(get("flood", f"i-f{n}")) for n in range(3)]
    while not calls:
        await asyncio.sleep(0)
    later_flood = asyncio.ensure_future(get("flood", "i-f9"))
    assert await gather(get("calm", "i-c1"), get("calm", "i-c2")) == ["I-C1", "I-C2"]  # while the flood's call is held
    release.set()
    assert await gather(*flood, later_flood) == ["I-F0", "I-F1", "I-F2", "I-F9"]
    assert calls == [("flood", ["i-f0", "i-f1", "i-f2"]), ("calm", ["i-c1", "i-c2"]), ("flood", ["i-f9"])]


# --------------------------------------------------------------------------------------------
# Observer.look_ahead: a burst's lookups, kept for the reconcile that follows
# --------------------------------------------------------------------------------------------


async def test_a_look_ahead_is_kept_for_one_use_and_merged_with_the_others(clock):
    gateway = PlacesGateway()
    observer = Observer(gateway, ttl=60, clock=clock)
    await gather(*(observer.look_ahead(Target("us-east-1", f"i-{n}")) for n in range(50)))
    assert gateway.calls == [PLACE]  # one describe for the burst
    assert (await observer.association(Target("us-east-1", "i-7"))).association_id == "iip-i-7"
    assert gateway.calls == [PLACE]
    await observer.association(Target("us-east-1", "i-7"))  # used up: looked up again
    assert len(gateway.calls) == 2


async def test_an_instance_mutated_during_a_look_ahead_or_refresh_is_looked_up_again(clock):
    gateway = PlacesGateway(held={PLACE[0]})
    observer = Observer(gateway, ttl=60, clock=clock)
    mutated, untouched = Target("us-east-1", "i-1"), Target("us-east-1", "i-2")
    ahead = [asyncio.ensure_future(observer.look_ahead(target)) for target in (mutated, untouched)]
    refresh = asyncio.ensure_future(observer.refresh({PLACE: ["i-1", "i-2"]}, wait=True))
    while len(gateway.calls) < 1:
        await asyncio.sleep(0.001)
    observer.invalidate(mutated)  # our own Associate, say, while both are in flight
    gateway.release.set()
    await gather(*ahead, refresh)
    calls = len(gateway.calls)
    assert (await observer.association(untouched)).association_id == "iip-i-2" and len(gateway.calls) == calls
    await observer.association(mutated)  # neither kept what it found before the mutation
    assert len(gateway.calls) == calls + 1


async def test_a_failed_look_ahead_keeps_nothing_and_raises_nothing(clock):
    gateway = PlacesGateway(failing={PLACE[0]: DENIED})
    observer = Observer(gateway, ttl=60, clock=clock)
    await asyncio.wait_for(observer.look_ahead(Target("us-east-1", "i-1")), TIMEOUT)
    with pytest.raises(AwsFault):  # the reconcile meets the outage itself
        await asyncio.wait_for(observer.association(Target("us-east-1", "i-1")), TIMEOUT)


async def test_lookups_in_flight_are_told_of_mutations_whichever_ends_first(clock):
    gateway = PlacesGateway(held={PLACE[0]})
    observer = Observer(gateway, ttl=60, clock=clock)
    slow, quick = Target("us-east-1", "i-1"), Target(OTHER_PLACE[1], "i-2", OTHER_PLACE[0])
    held = asyncio.ensure_future(observer.look_ahead(slow))
    while not gateway.calls:
        await asyncio.sleep(0.001)
    await gather(observer.look_ahead(quick))  # ends first: its tracking goes, not the other's
    observer.invalidate(slow)
    gateway.release.set()
    await gather(held)
    calls = len(gateway.calls)
    await observer.association(slow)  # what it found predates the mutation: not kept
    assert len(gateway.calls) == calls + 1
