"""Synchronisation by condition, never by sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout: float = 20.0, what: str = "condition", interval: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy; return that. Fail with the last value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = probe()
        except AssertionError as error:  # a probe may assert; keep its message
            last = error
        else:
            if last:
                return last  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """On an event loop: wait until ``condition()`` is truthy (the timeout is reached only when a test fails)."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)

