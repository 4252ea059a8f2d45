"""backoff() and the delaying WorkQueue."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instance_profile_operator.runtime.workqueue import KeyLocks, Priority, WorkQueue, backoff, on_grid

from ..support.clock import FakeClock

# --------------------------------------------------------------------------------------------
# backoff()
# --------------------------------------------------------------------------------------------

LOW = lambda: 0.0  # noqa: E731
HIGH = lambda: 1.0  # noqa: E731


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "ceiling"),
    [
        (0, 1.0, 60.0, 1.0),
        (1, 1.0, 60.0, 2.0),
        (3, 0.5, 60.0, 4.0),
        (5, 1.0, 60.0, 32.0),
        (6, 1.0, 60.0, 60.0),  # 64 capped
        (100, 1.0, 60.0, 60.0),
    ],
)
def test_backoff_bounds(attempt, base, cap, ceiling):
    assert backoff(attempt, base, cap, rand=HIGH) == pytest.approx(ceiling)
    assert backoff(attempt, base, cap, rand=LOW) == pytest.approx(ceiling / 2)
    assert backoff(attempt, base, cap, rand=lambda: 0.5) == pytest.approx(ceiling * 0.75)


@given(
    attempt=st.integers(min_value=0, max_value=1000),
    base=st.floats(min_value=0.001, max_value=10.0),
    cap=st.floats(min_value=0.01, max_value=3600.0),
    r=st.floats(min_value=0.0, max_value=1.0),
)
def test_backoff_within_half_and_full_capped_ceiling(attempt, base, cap, r):
    ceiling = min(cap, base * 2.0 ** min(attempt, 1000))
    delay = backoff(attempt, base, cap, rand=lambda: r)
    assert ceiling / 2 * (1 - 1e-12) <= delay <= ceiling * (1 + 1e-12)
    assert delay <= cap * (1 + 1e-12)


@given(
    attempt=st.integers(min_value=0, max_value=999),
    base=st.floats(min_value=0.001, max_value=10.0),
    cap=st.floats(min_value=0.01, max_value=3600.0),
)
def test_backoff_ceiling_is_monotone(attempt, base, cap):
    assert backoff(attempt, base, cap, rand=HIGH) <= backoff(attempt + 1, base, cap, rand=HIGH)
    assert backoff(attempt, base, cap, rand=LOW) <= backoff(attempt + 1, base, cap, rand=LOW)


def test_backoff_huge_attempt_does_not_overflow():
    assert backoff(10**6, 0.1, 300.0, rand=HIGH) == 300.0
    assert backoff(10**6, 0.1, 300.0, rand=LOW) == 150.0


def test_backoff_default_jitter_stays_in_range():
    for _ in range(100):
        assert 2.0 <= backoff(2, 1.0, 60.0) <= 4.0


# --------------------------------------------------------------------------------------------
# WorkQueue
# --------------------------------------------------------------------------------------------

DELIVERY_TIMEOUT = 1.0  # real seconds: generous, only reached when a test fails
SILENCE = 0.05  # real seconds a get() must stay unanswered to show nothing is due


@pytest.fixture
def queue(clock: FakeClock) -> WorkQueue[str]:
    return WorkQueue(clock=clock)


async def next_key(queue: WorkQueue[str]) -> str:
    return await asyncio.wait_for(queue.get(), DELIVERY_TIMEOUT)


async def assert_nothing_due(queue: WorkQueue[str]) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(queue.get(), SILENCE)


async def test_key_added_twice_is_delivered_once(queue):
    queue.add("a")
    queue.add("a")
    assert len(queue) == 1
    assert await next_key(queue) == "a"
    queue.done("a")
    await assert_nothing_due(queue)


async def test_delayed_key_waits_for_its_due_time(queue, clock):
    queue.add("a", delay=10)
    await assert_nothing_due(queue)
    clock.advance(9.9)
    await assert_nothing_due(queue)
    clock.advance(0.1)
    assert await next_key(queue) == "a"


async def test_earlier_due_time_wins(queue, clock):
    queue.add("a", delay=10)
    queue.add("a", delay=1)
    assert len(queue) == 1
    clock.advance(1)
    assert await next_key(queue) == "a"
    queue.done("a")
    clock.advance(20)
    await assert_nothing_due(queue)  # the superseded later entry does not deliver it again


async def test_later_due_time_does_not_postpone(queue, clock):
    queue.add("a", delay=1)
    queue.add("a", delay=10)
    clock.advance(1)
    assert await next_key(queue) == "a"


async def test_immediate_add_overrides_pending_delay(queue):
    queue.add("a", delay=30)
    queue.add("a")
    assert await next_key(queue) == "a"


async def test_key_added_while_processing_is_redelivered_after_done(queue):
    queue.add("a")
    assert await next_key(queue) == "a"
    queue.add("a")
    await assert_nothing_due(queue)  # never handed to a second worker while processing
    queue.done("a")
    assert await next_key(queue) == "a"
    queue.done("a")
    await assert_nothing_due(queue)


async def test_redelivery_after_done_keeps_the_delay(queue, clock):
    queue.add("a")
    assert await next_key(queue) == "a"
    queue.add("a", delay=5)
    queue.done("a")
    await assert_nothing_due(queue)
    clock.advance(5)
    assert await next_key(queue) == "a"


async def test_done_without_readd_does_not_redeliver(queue):
    queue.add("a")
    assert await next_key(queue) == "a"
    queue.done("a")
    await assert_nothing_due(queue)


async def test_forget_drops_a_pending_key(queue, clock):
    queue.add("a", delay=5)
    queue.add("b", delay=6)
    queue.forget("a")
    assert len(queue) == 1
    clock.advance(10)
    assert await next_key(queue) == "b"
    queue.done("b")
    await assert_nothing_due(queue)


async def test_forget_drops_a_readd_during_processing(queue):
    queue.add("a")
    assert await next_key(queue) == "a"
    queue.add("a")
    queue.forget("a")
    queue.done("a")
    await assert_nothing_due(queue)


async def test_keys_delivered_in_due_order(queue, clock):
    queue.add("late", delay=2)
    queue.add("early", delay=1)
    clock.advance(5)
    assert await next_key(queue) == "early"
    assert await next_key(queue) == "late"


async def test_keys_due_at_the_same_time_in_insertion_order(queue):
    for key in ("c", "a", "b"):
        queue.add(key)
    assert [await next_key(queue) for _ in range(3)] == ["c", "a", "b"]


async def test_waiting_getter_is_woken_by_add(queue):
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)  # let it start waiting (a yield, not a timing assumption)
    assert not getter.done()
    queue.add("a")
    assert await asyncio.wait_for(getter, DELIVERY_TIMEOUT) == "a"


async def test_waiting_getter_is_woken_by_earlier_key(queue, clock):
    queue.add("later", delay=60)
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.add("now")
    assert await asyncio.wait_for(getter, DELIVERY_TIMEOUT) == "now"


async def test_negative_delay_is_immediate(queue):
    queue.add("a", delay=-5)
    assert await next_key(queue) == "a"


# --------------------------------------------------------------------------------------------
# WorkQueue priorities
# --------------------------------------------------------------------------------------------

USER, BACKGROUND = Priority.USER, Priority.BACKGROUND


async def test_users_change_goes_before_a_queued_resync(queue):
    for n in range(100):
        queue.add(f"resync-{n}", priority=BACKGROUND)
    queue.add("user", priority=USER)
    assert await next_key(queue) == "user"
    assert [await next_key(queue) for _ in range(3)] == ["resync-0", "resync-1", "resync-2"]


async def test_a_worker_going_through_a_resync_lets_a_users_change_in():
    queue: WorkQueue[str] = WorkQueue(clock=lambda: 0.0)
    for n in range(1000):
        queue.add(f"resync-{n}", priority=BACKGROUND)
    asyncio.get_running_loop().call_soon(queue.add, "user")  # a watch event, read at the loop's next turn
    delivered = []
    while len(queue):
        key = await queue.get()  # reconciles that find everything in memory have no await of their own
        queue.done(key)
        delivered.append(key)
    assert "user" in delivered[:2]


async def test_default_priority_is_a_users(queue):
    queue.add("resync", priority=BACKGROUND)
    queue.add("plain")
    assert await next_key(queue) == "plain"


async def test_priority_orders_only_keys_that_are_due(queue, clock):
    queue.add("resync", priority=BACKGROUND)
    queue.add("user-later", delay=5, priority=USER)
    assert await next_key(queue) == "resync"  # a user's key that is not due yet does not hold it back
    await assert_nothing_due(queue)
    clock.advance(5)
    assert await next_key(queue) == "user-later"


async def test_readding_with_a_higher_priority_promotes_the_key(queue):
    for key in ("a", "b", "c"):
        queue.add(key, priority=BACKGROUND)
    queue.add("c", priority=USER)
    assert len(queue) == 3
    assert [await next_key(queue) for _ in range(3)] == ["c", "a", "b"]
    await assert_nothing_due(queue)  # promoted, not duplicated


async def test_readding_with_a_lower_priority_keeps_the_higher(queue):
    queue.add("a", priority=BACKGROUND)
    queue.add("b", priority=USER)
    queue.add("b", priority=BACKGROUND)
    assert await next_key(queue) == "b"


async def test_promotion_keeps_the_earlier_due_time(queue, clock):
    queue.add("a", delay=1, priority=BACKGROUND)
    queue.add("a", delay=10, priority=USER)  # promoted, still due in 1 s
    clock.advance(1)
    assert await next_key(queue) == "a"
    queue.done("a")
    clock.advance(20)
    await assert_nothing_due(queue)


async def test_same_priority_keeps_due_order(queue, clock):
    queue.add("late", delay=2, priority=BACKGROUND)
    queue.add("early", delay=1, priority=BACKGROUND)
    clock.advance(5)
    assert [await next_key(queue) for _ in range(2)] == ["early", "late"]


async def test_readd_while_processing_keeps_the_higher_priority(queue):
    queue.add("a", priority=BACKGROUND)
    assert await next_key(queue) == "a"
    queue.add("a", priority=BACKGROUND)
    queue.add("a", priority=USER)
    queue.add("z", priority=BACKGROUND)
    queue.done("a")
    assert await next_key(queue) == "a"


@given(adds=st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from([USER, BACKGROUND])), min_size=1, max_size=30))
def test_every_queued_user_key_is_delivered_before_any_background_key(adds):
    async def run() -> list[str]:
        queue: WorkQueue[str] = WorkQueue(clock=lambda: 0.0)
        for key, priority in adds:
            queue.add(key, priority=priority)
        return [await asyncio.wait_for(queue.get(), DELIVERY_TIMEOUT) for _ in range(len(queue))]

    delivered = asyncio.run(run())
    best = {key: min(p for k, p in adds if k == key) for key, _ in adds}
    assert sorted(delivered) == sorted(best)  # each key once
    assert [best[key] for key in delivered] == sorted(best[key] for key in delivered)
    first_add = {key: next(i for i, (k, _) in enumerate(adds) if k == key) for key in best}
    for priority in (USER, BACKGROUND):  # within a priority: in the order keys were added
        keys = [key for key in delivered if best[key] == priority]
        promoted = [key for key in keys if adds[first_add[key]][1] != priority]
        unpromoted = [key for key in keys if key not in promoted]
        assert unpromoted == sorted(unpromoted, key=first_add.get)


@given(now=st.floats(0, 1e6), delay=st.floats(0, 300), grid=st.sampled_from([0.1, 0.5, 1.0]))
def test_on_grid_stretches_a_delay_by_less_than_the_grid_to_a_multiple_of_it(now, delay, grid):
    stretched = on_grid(now, delay, grid)
    assert delay - 1e-6 <= stretched < delay + grid + 1e-6
    due = (now + stretched) / grid
    assert abs(due - round(due)) < 1e-6


def test_keys_requeued_within_one_grid_step_come_due_together():
    assert {round(now + on_grid(now, 1.0, 0.5), 9) for now in (10.01, 10.2, 10.49)} == {11.5}


async def test_key_locks_exclude_per_key_and_are_dropped_once_released():
    locks: KeyLocks[str] = KeyLocks()
    inside: list[str] = []
    entered = asyncio.Event()

    async def hold(key: str, name: str, release: asyncio.Event) -> None:
        async with locks.hold(key):
            inside.append(name)
            entered.set()
            await release.wait()
            inside.remove(name)

    release_a, release_b = asyncio.Event(), asyncio.Event()
    a = asyncio.ensure_future(hold("k", "a", release_a))
    await entered.wait()
    b = asyncio.ensure_future(hold("k", "b", release_b))
    other = asyncio.ensure_future(hold("other", "c", asyncio.Event()))
    await asyncio.sleep(0)
    assert inside == ["a", "c"] and len(locks) == 2  # b waits for a; another key does not
    release_a.set()
    await a
    await asyncio.sleep(0)
    assert inside == ["c", "b"]
    release_b.set()
    await b
    other.cancel()
    await asyncio.gather(other, return_exceptions=True)
    assert len(locks) == 0


# --------------------------------------------------------------------------------------------
# WorkQueue: namespaces take turns
# --------------------------------------------------------------------------------------------

FOLLOW_UP = Priority.FOLLOW_UP


def namespaced(clock: FakeClock) -> WorkQueue[tuple[str, str]]:
    return WorkQueue(clock=clock, tenant_of=lambda key: key[0])


@given(flood=st.integers(min_value=1, max_value=60), done_first=st.integers(min_value=0, max_value=20),
       flood_priority=st.sampled_from([FOLLOW_UP, USER]))
def test_a_namespaces_change_is_served_within_one_key_of_another_namespaces_flood(flood, done_first, flood_priority):
    """Whatever the flood's size, however far its workers got, and even when the flood's keys are
    follow-ups (a settle check whose spec moved on becomes a change of its own)."""
    async def run() -> int:
        clock = FakeClock()
        queue = namespaced(clock)
        for n in range(flood):
            queue.add(("flood", f"b-{n}"), priority=flood_priority)
            clock.advance(0.001)  # the flood's keys are all due before the calm namespace's
        for _ in range(min(done_first, flood - 1)):
            queue.done(await asyncio.wait_for(queue.get(), DELIVERY_TIMEOUT))
        queue.add(("calm", "new"), priority=USER)
        for grant in range(1, flood + 2):
            key = await asyncio.wait_for(queue.get(), DELIVERY_TIMEOUT)
            if key[0] == "calm":
                return grant
        raise AssertionError("never served")

    assert asyncio.run(run()) <= 2


async def test_each_namespaces_own_keys_keep_their_priority_and_due_order(clock):
    queue = namespaced(clock)
    queue.add(("a", "user"), priority=USER)
    queue.add(("a", "follow-up"), priority=FOLLOW_UP)
    queue.add(("b", "first"))
    clock.advance(1)
    queue.add(("b", "second"))
    assert [await next_key(queue) for _ in range(4)] == [("a", "follow-up"), ("b", "first"), ("a", "user"), ("b", "second")]


async def test_a_namespaces_resync_stays_behind_another_namespaces_changes(clock):
    queue = namespaced(clock)
    for n in range(3):
        queue.add(("flood", f"b-{n}"), priority=USER)
    queue.add(("calm", "resync"), priority=BACKGROUND)
    assert [(await next_key(queue))[0] for _ in range(4)] == ["flood"] * 3 + ["calm"]


async def test_a_namespace_at_its_limit_leaves_the_other_workers_to_other_namespaces(clock):
    queue: WorkQueue[tuple[str, str]] = WorkQueue(clock=clock, tenant_of=lambda key: key[0], tenant_limit=2)
    for n in range(5):
        queue.add(("flood", f"b-{n}"))
    taken = [await next_key(queue), await next_key(queue)]
    await assert_nothing_due(queue)  # a third worker stays free
    queue.add(("calm", "new"))
    assert await next_key(queue) == ("calm", "new")
    waiting = asyncio.ensure_future(queue.get())
    for _ in range(3):
        await asyncio.sleep(0)  # let it reach its wait (yields, not a timing assumption)
    assert not waiting.done()
    queue.done(taken[0])  # a flood's reconcile ends: its next key goes to the waiting worker
    assert await asyncio.wait_for(waiting, DELIVERY_TIMEOUT) == ("flood", "b-2")
