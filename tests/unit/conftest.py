"""Fixtures of the unit tests: no server, no real time."""

from __future__ import annotations

import pytest
from hypothesis import settings

from ..support.clock import FakeClock

# Hypothesis fails an example slower than 200 ms: a timing, which a loaded shared machine misses
# (a property test of the rate limiter did). Speed is the benchmarks' business, not the tests'.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
