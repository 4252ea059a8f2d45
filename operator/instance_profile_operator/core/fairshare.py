"""Round-robin fair queueing across tenants: one tenant's many items never hold up another's few.

``FairQueue`` orders items by tier first (a lower tier strictly first), then takes tenants in
turn: each tenant with items in that tier gets one, then goes to the end of the turn order; a
tenant that had none joins at the end. A tenant's own items go in their ``order``. So an item of
a tenant with nothing else queued is served within as many pops as there are other tenants
waiting in its tier, however many items those tenants have. The work queue serves binding keys
from it (tenant: the namespace), the rate limiter its waiters for EC2 tokens.

Removal is lazy: ``peek`` and ``pop`` skip (and drop) the items their ``valid`` rejects, the way
the work queue supersedes entries and the limiter drops cancelled waiters. Tenants their
``eligible`` rejects are passed over and keep their turn (the work queue's tenants holding their
share of the workers).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from typing import Any, Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


def _always(_: Any) -> bool:
    return True


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._tiers: dict[int, OrderedDict[Hashable, list[tuple[Any, int, T]]]] = {}  # tier -> tenants in turn -> heap
        self._arrivals = itertools.count()
        self._size = 0

    def __len__(self) -> int:
        """Items pushed and not popped, invalid ones not yet skipped included."""
        return self._size

    def push(self, item: T, tenant: Hashable = None, tier: int = 0, order: Any = ()) -> None:
        turns = self._tiers.setdefault(tier, OrderedDict())
        heapq.heappush(turns.setdefault(tenant, []), (order, next(self._arrivals), item))
        self._size += 1

    def peek(self, valid: Callable[[T], bool] = _always, eligible: Callable[[Hashable], bool] = _always) -> T | None:
        """The item ``pop`` would return, left in place; None if there is none."""
        found = self._next(valid, eligible)
        return None if found is None else found[2][0][2]

    def pop(self, valid: Callable[[T], bool] = _always, eligible: Callable[[Hashable], bool] = _always) -> T | None:
        """The next item: lowest tier, then the eligible tenant whose turn it is, then its first by order."""
        found = self._next(valid, eligible)
        if found is None:
            return None
        turns, tenant, items = found
        item = heapq.heappop(items)[2]
        self._size -= 1
        if items:
            turns.move_to_end(tenant)  # its turn is over
        else:
            del turns[tenant]
        return item

    def _next(self, valid: Callable[[T], bool], eligible: Callable[[Hashable], bool]) -> tuple[OrderedDict, Hashable, list] | None:
        for tier in sorted(self._tiers):
            turns = self._tiers[tier]
            found, dry = None, []
            for tenant, items in turns.items():  # as a rule, the first tenant is the one
                while items and not valid(items[0][2]):
                    heapq.heappop(items)
                    self._size -= 1
                if not items:
                    dry.append(tenant)
                elif eligible(tenant):
                    found = turns, tenant, items
                    break
            for tenant in dry:
                del turns[tenant]
            if found is not None:
                return found
            if not turns:
                del self._tiers[tier]
        return None
