"""FairQueue: tiers strictly, tenants in turn, each tenant's items in order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from instance_profile_operator.core.fairshare import FairQueue


def drain(queue: FairQueue, valid=lambda item: True) -> list:
    items = []
    while (item := queue.pop(valid)) is not None:
        items.append(item)
    return items


def test_one_tenant_gets_its_items_in_order():
    queue: FairQueue[str] = FairQueue()
    for item, order in (("c", 3), ("a", 1), ("b", 2)):
        queue.push(item, "t", order=order)
    assert len(queue) == 3
    assert drain(queue) == ["a", "b", "c"] and len(queue) == 0


def test_tenants_take_turns_one_item_each():
    queue: FairQueue[str] = FairQueue()
    for n in range(5):
        queue.push(f"a{n}", "a", order=n)
    queue.push("b0", "b", order=0)
    queue.push("b1", "b", order=1)
    assert drain(queue) == ["a0", "b0", "a1", "b1", "a2", "a3", "a4"]


def test_a_tenant_that_ran_dry_joins_the_turns_at_their_end():
    queue: FairQueue[str] = FairQueue()
    for tenant in "abc":
        queue.push(f"{tenant}0", tenant, order=0)
        queue.push(f"{tenant}1", tenant, order=1)
    assert queue.pop() == "a0"
    queue.push("d0", "d")
    assert drain(queue) == ["b0", "c0", "a1", "d0", "b1", "c1"]


def test_a_lower_tier_goes_first_whatever_the_turn():
    queue: FairQueue[str] = FairQueue()
    queue.push("a-background", "a", tier=1)
    queue.push("b-background", "b", tier=1)
    queue.push("b-user", "b", tier=0)
    assert drain(queue) == ["b-user", "a-background", "b-background"]


def test_invalid_items_are_skipped_and_dropped():
    queue: FairQueue[str] = FairQueue()
    for item in ("a-stale", "a-live"):
        queue.push(item, "a", order=item != "a-stale")
    queue.push("b-stale", "b")
    queue.push("c-live", "c")
    live = lambda item: item.endswith("live")  # noqa: E731
    assert queue.peek(live) == "a-live"
    assert drain(queue, live) == ["a-live", "c-live"]
    assert len(queue) == 0 and queue.peek() is None


@given(st.lists(st.one_of(st.sampled_from("abcd"), st.none()), max_size=80))
def test_between_an_items_arrival_and_its_turn_no_other_tenant_gets_more_than_one_item_per_own_item(operations):
    """Tenant letters push an item, None pops one. When an item of tenant t is served, every other
    tenant has been served at most once more than t since the item arrived: with a flood from one
    tenant, another's item waits one of the flood's items per item of its own ahead of it."""
    queue: FairQueue[tuple[str, int]] = FairQueue()
    served: dict[str, int] = {tenant: 0 for tenant in "abcd"}
    arrived: dict[tuple[str, int], dict[str, int]] = {}
    for n, operation in enumerate(operations):
        if operation is not None:
            item = (operation, n)
            queue.push(item, operation, order=n)
            arrived[item] = dict(served)
            continue
        item = queue.pop()
        if item is None:
            continue
        tenant = item[0]
        since = {other: served[other] - arrived[item][other] for other in served}
        for other, count in since.items():
            if other != tenant:
                assert count <= since[tenant] + 1, (item, since)
        served[tenant] += 1


def test_a_tenant_not_eligible_is_passed_over_and_keeps_its_turn():
    queue: FairQueue[str] = FairQueue()
    for tenant in "ab":
        queue.push(f"{tenant}0", tenant, order=0)
        queue.push(f"{tenant}1", tenant, order=1)
    assert queue.peek(eligible=lambda tenant: tenant != "a") == "b0"
    assert queue.pop(eligible=lambda tenant: tenant != "a") == "b0"
    assert queue.pop(eligible=lambda tenant: False) is None and len(queue) == 3
    assert drain(queue) == ["a0", "b1", "a1"]
