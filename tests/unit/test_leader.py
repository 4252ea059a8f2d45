"""The Lease rules (pure) and the Elector against an in-memory Lease API with optimistic concurrency."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from instance_profile_operator.kube.leader import Elector, Timing, claim, may_take, micro_time, released
from instance_profile_operator.runtime.metrics import LEASE, Metrics
from instance_profile_operator.settings import SettingsError, add_arguments, from_arguments, pod_namespace

from ..support.clock import FakeClock

NOW = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=timezone.utc)
EARLIER = "2026-05-04T03:00:00.000000Z"

# --------------------------------------------------------------------------------------------
# pure rules
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "observed_at", "now", "allowed"), [
    ({}, 0, 0, True),  # never held
    ({"holderIdentity": ""}, 0, 0, True),  # released
    ({"holderIdentity": "me", "leaseDurationSeconds": 15}, 0, 1, True),  # ours: renew
    ({"holderIdentity": "other", "leaseDurationSeconds": 15}, 100, 114.9, False),
    ({"holderIdentity": "other", "leaseDurationSeconds": 15}, 100, 115, True),  # not renewed for its duration
    ({"holderIdentity": "other", "leaseDurationSeconds": 1}, 100, 101, True),
    ({"holderIdentity": "other"}, 100, 109, False),  # no duration written: ours (10 s) applies
    ({"holderIdentity": "other"}, 100, 110, True),
])
def test_may_take(spec, observed_at, now, allowed):
    assert may_take(spec, "me", observed_at, now, default_duration=10) is allowed


def test_claim_of_a_new_lease_starts_the_first_term():
    assert claim(None, "me", 15, NOW) == {
        "holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "2026-05-04T03:02:01.123456Z",
        "renewTime": "2026-05-04T03:02:01.123456Z", "leaseTransitions": 0,
    }


def test_renewal_keeps_the_term():
    spec = {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": EARLIER, "renewTime": EARLIER, "leaseTransitions": 3}
    renewed = claim(spec, "me", 15, NOW)
    assert (renewed["acquireTime"], renewed["leaseTransitions"]) == (EARLIER, 3)
    assert renewed["renewTime"] == micro_time(NOW)


@pytest.mark.parametrize("holder", ["other", ""])
def test_taking_over_starts_a_new_term(holder):
    spec = {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": EARLIER, "renewTime": EARLIER, "leaseTransitions": 3}
    taken = claim(spec, "me", 14.2, NOW)
    assert taken == {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": micro_time(NOW),
                     "renewTime": micro_time(NOW), "leaseTransitions": 4}


def test_release_leaves_no_holder_and_keeps_the_count():
    spec = claim({"holderIdentity": "x", "leaseTransitions": 2}, "me", 15, NOW)
    assert released(spec, NOW) == {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": micro_time(NOW),
                                   "renewTime": micro_time(NOW), "leaseTransitions": 3}


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(9000, 1, 1),
                    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7))])))
def test_micro_time_is_utc_with_six_fraction_digits(moment):
    text = micro_time(moment)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)
    assert datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc) == moment


# --------------------------------------------------------------------------------------------
# Elector
# --------------------------------------------------------------------------------------------


class LeaseApi:
    """The three Lease calls the Elector makes, with the API server's 404/409 and resourceVersion rules."""

    def __init__(self) -> None:
        self.lease: dict | None = None
        self.version = 0
        self.failing = False

    def _check(self) -> None:
        if self.failing:
            raise ApiException(status=503, reason="Service Unavailable")

    def read_namespaced_lease(self, name, namespace, **_):
        self._check()
        if self.lease is None:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=json.dumps(self.lease).encode())

    def _store(self, body: dict) -> SimpleNamespace:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return SimpleNamespace(data=json.dumps(self.lease).encode())

    def create_namespaced_lease(self, namespace, body, **_):
        self._check()
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace_namespaced_lease(self, name, namespace, body, **_):
        self._check()
        if self.lease is None or body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)


FAST = Timing(lease_duration=15, renew_deadline=0.2, retry_period=0.02)  # keep() runs on real time


@pytest.fixture
def api() -> LeaseApi:
    return LeaseApi()


def elector(api: LeaseApi, clock: FakeClock, me: str, metrics: Metrics | None = None) -> Elector:
    return Elector(api, "ops", me, FAST, metrics or Metrics(), clock=clock, now=lambda: NOW + timedelta(seconds=clock()))


def holder(api: LeaseApi) -> str:
    return api.lease["spec"]["holderIdentity"]


async def test_first_takes_the_lease_and_the_second_waits_for_it_to_expire(api, clock):
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    assert api.lease["metadata"]["name"] == LEASE
    assert not await b.try_acquire_or_renew()
    clock.advance(14)
    assert await a.try_acquire_or_renew()  # renewed: b sees the Lease change ...
    clock.advance(14)
    assert not await b.try_acquire_or_renew()  # ... and counts its duration from then
    clock.advance(1)
    assert not await b.try_acquire_or_renew()  # b saw the renewal only at its previous attempt
    clock.advance(15)
    assert await b.try_acquire_or_renew()
    assert holder(api) == "b" and api.lease["spec"]["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew() and a.held_by_another()


async def test_a_write_that_lost_a_race_fails(api, clock):
    a = elector(api, clock, "a")
    read = api.read_namespaced_lease

    def read_then_lose_the_race(*args, **kwargs):
        response = read(*args, **kwargs)
        api.read_namespaced_lease = read
        lease = json.loads(response.data)
        api.replace_namespaced_lease(LEASE, "ops", {**lease, "spec": claim(lease["spec"], "b", 15, NOW)})
        return response

    api.create_namespaced_lease("ops", {"metadata": {"name": LEASE}, "spec": {"holderIdentity": ""}})
    api.read_namespaced_lease = read_then_lose_the_race
    assert not await a.try_acquire_or_renew()  # its update carried the resourceVersion it read: 409
    assert holder(api) == "b" and not a.leading


async def test_acquire_until_stopped(api, clock):
    other = elector(api, clock, "other")
    assert await other.try_acquire_or_renew()
    stop = asyncio.Event()
    waiting = asyncio.create_task(elector(api, clock, "me").acquire(stop))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    stop.set()
    assert await asyncio.wait_for(waiting, 1) is False


async def test_leader_status_follows_the_lease(api, clock):
    metrics = Metrics()
    me = elector(api, clock, "me", metrics)
    assert await me.acquire(asyncio.Event())
    assert metrics.leader.labels(LEASE)._value.get() == 1
    await me.release()
    assert metrics.leader.labels(LEASE)._value.get() == 0
    assert holder(api) == ""
    assert await elector(api, clock, "next").try_acquire_or_renew()  # at once, no expiry to wait for


async def test_keep_returns_when_another_holds_the_lease(api, clock):
    me = elector(api, clock, "me")
    assert await me.acquire(asyncio.Event())
    keeping = asyncio.create_task(me.keep())
    await asyncio.sleep(0.05)
    assert not keeping.done()
    api.lease["spec"]["holderIdentity"] = "intruder"
    await asyncio.wait_for(keeping, 1)
    assert me.held_by_another() and not me.leading


async def test_keep_returns_when_renewals_fail_past_the_deadline(api):
    me = Elector(api, "ops", "me", FAST, Metrics())  # real monotonic clock: the deadline is real time here
    assert await me.acquire(asyncio.Event())
    api.failing = True
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(me.keep(), 2)
    assert asyncio.get_running_loop().time() - started >= FAST.renew_deadline
    assert not me.leading and not me.held_by_another()


# --------------------------------------------------------------------------------------------
# flags
# --------------------------------------------------------------------------------------------


def settings(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_arguments(parser.parse_args(["--region", "us-east-1", *argv]))


@pytest.fixture
def no_election_env(monkeypatch):
    for name in ("IPO_LEADER_ELECT", "IPO_LEADER_ELECTION_NAMESPACE", "IPO_LEADER_ELECT_LEASE_DURATION",
                 "IPO_LEADER_ELECT_RENEW_DEADLINE", "IPO_LEADER_ELECT_RETRY_PERIOD"):
        monkeypatch.delenv(name, raising=False)


def test_election_is_off_by_default_with_controller_runtimes_durations(no_election_env):
    chosen = settings()
    assert not chosen.leader_elect
    assert (chosen.lease_duration_seconds, chosen.renew_deadline_seconds, chosen.retry_period_seconds) == (15, 10, 2)


def test_election_flags_and_environment(no_election_env, monkeypatch, tmp_path):
    monkeypatch.setenv("IPO_LEADER_ELECT", "true")
    monkeypatch.setenv("IPO_LEADER_ELECT_RETRY_PERIOD", "1")
    chosen = settings("--leader-election-namespace", "ops", "--leader-elect-lease-duration", "30")
    assert chosen.leader_elect and chosen.leader_election_namespace == "ops"
    assert (chosen.lease_duration_seconds, chosen.renew_deadline_seconds, chosen.retry_period_seconds) == (30, 10, 1)
    assert not settings("--no-leader-elect").leader_elect
    (tmp_path / "namespace").write_text("platform\n")
    assert pod_namespace(tmp_path / "namespace") == "platform"
    assert pod_namespace(tmp_path / "absent") == "default"


@pytest.mark.parametrize("argv", [
    ("--leader-elect-renew-deadline", "15"),  # not shorter than the lease duration
    ("--leader-elect-retry-period", "10"),  # not shorter than the renew deadline
])
def test_inconsistent_durations_are_refused(no_election_env, argv):
    with pytest.raises(SettingsError, match="lease-duration > --leader-elect-renew-deadline"):
        settings(*argv)
