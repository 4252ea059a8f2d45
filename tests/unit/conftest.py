"""Fixtures of the unit tests: no server, no real time."""

from __future__ import annotations

import pytest

from ..support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
