"""Resync and start-up listing: each account and region on its own, none holding the others."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from instance_profile_operator.core.api import FINALIZER
from instance_profile_operator.bindings.controller import Controller
from instance_profile_operator.core.faults import AwsFault, FaultKind
from instance_profile_operator.core.model import Association, AssociationState
from instance_profile_operator.aws.ratelimit import current_tenant
from instance_profile_operator.settings import Settings
from instance_profile_operator.core.tenancy import Tenancy

from ..support.clock import FakeClock

TIMEOUT = 5.0  # real seconds: reached only when a test fails
ARN = "arn:aws:iam::123456789012:instance-profile/web"
ROLE = "arn:aws:iam::222233334444:role/ipo"
DENIED = AwsFault(FaultKind.ACCESS_DENIED, "UnauthorizedOperation", "not allowed")


class PlacesGateway:
    """Describes answer per account: ``failing`` ones raise, ``held`` ones first wait for ``release``."""

    def __init__(self, failing: dict[str, Exception] | None = None, held: set[str] = frozenset()):
        self.failing = failing or {}
        self.held = held
        self.release = asyncio.Event()
        self.retained: list[set] = []  # the places each resync kept clients and buckets for

    def retain(self, places) -> None:
        self.retained.append(set(places))

    async def describe_associations(self, region, instance_ids, account=""):
        if account in self.held:
            await self.release.wait()
        if account in self.failing:
            raise self.failing[account]
        return {i: Association(f"iip-{i}", i, ARN, "AIPA", AssociationState.ASSOCIATED) for i in instance_ids}

    def close(self) -> None:
        pass


def binding(name: str, role_arn: str = "") -> dict:
    """A binding whose status records the association it made and the account it acts in."""
    return {"metadata": {"namespace": "team", "name": name, "uid": f"u-{name}", "generation": 1, "finalizers": [FINALIZER]},
            "spec": {"instanceId": f"i-{name}", "iamInstanceProfile": {"name": "web"}},
            "status": {"associationId": f"iip-i-{name}", **({"roleArn": role_arn} if role_arn else {})}}


def controller_with(gateway: PlacesGateway, *bodies: dict, clock: FakeClock | None = None) -> Controller:
    controller = Controller(Settings(region="us-east-1"), gateway, SimpleNamespace(), Tenancy(enforcing=False), clock=clock or FakeClock())
    for body in bodies:
        controller.on_event("ADDED", body)
    return controller


async def drain(controller: Controller) -> list[str]:
    """The queued keys' names, emptying the queue."""
    names = []
    while len(controller.queue):
        key = await asyncio.wait_for(controller.queue.get(), TIMEOUT)
        controller.queue.done(key)
        names.append(key[1])
    return sorted(names)


def failures(controller: Controller, account: str) -> float | None:
    return controller.metrics.registry.get_sample_value("ipo_resync_failures_total", {"account": account, "region": "us-east-1"})


async def test_a_failing_account_stops_no_other_and_its_bindings_are_queued_to_show_the_fault():
    controller = controller_with(PlacesGateway(failing={ROLE: DENIED}), binding("own"), binding("remote", ROLE))
    await drain(controller)
    await asyncio.wait_for(controller.resync(), TIMEOUT)
    assert await drain(controller) == ["own", "remote"] and controller.resyncs == 1
    assert failures(controller, ROLE) == 1 and failures(controller, "own") is None
    with_fault = await asyncio.gather(controller.observer.association(controller.registry.target(controller.registry.get(("team", "remote")))),
                                      return_exceptions=True)
    assert with_fault == [DENIED]  # its reconcile finds the fault at once, without another call


async def test_a_slow_account_holds_neither_the_others_bindings_nor_the_next_resync():
    gateway = PlacesGateway(failing={ROLE: DENIED}, held={ROLE})
    controller = controller_with(gateway, binding("own"), binding("remote", ROLE))
    await drain(controller)
    first = asyncio.ensure_future(controller.resync())
    while len(controller.queue) < 1:
        await asyncio.sleep(0.001)
    assert await drain(controller) == ["own"]  # queued while the other account still answers
    await asyncio.wait_for(controller.resync(), TIMEOUT)  # the next one is not held either
    assert await drain(controller) == ["own"] and controller.resyncs == 1
    gateway.release.set()
    await asyncio.wait_for(first, TIMEOUT)
    assert await drain(controller) == ["remote"] and failures(controller, ROLE) == 1


async def test_an_account_that_answers_again_has_its_failing_bindings_retried_at_once(clock):
    gateway = PlacesGateway(failing={ROLE: DENIED})
    controller = controller_with(gateway, binding("remote", ROLE), clock=clock)
    await drain(controller)
    await controller.resync()
    key = await controller.queue.get()
    controller.outcomes.failed(controller.registry.get(key), FaultKind.ACCESS_DENIED, str(DENIED))  # its reconcile
    controller.queue.done(key)
    del gateway.failing[ROLE]
    clock.advance(controller.settings.resync_seconds)  # the account's retry is due
    await controller.resync()
    assert await drain(controller) == ["remote"]  # not left to its failure backoff


async def test_the_listing_queues_every_binding_whatever_a_place_raises():
    gateway = PlacesGateway(failing={ROLE: RuntimeError("a bug")})
    controller = Controller(Settings(region="us-east-1"), gateway, SimpleNamespace(), Tenancy(enforcing=False))
    for body in (binding("own"), binding("remote", ROLE)):
        controller.on_event(None, body)
    while len(controller.queue) < 2:
        await asyncio.sleep(0.01)
    assert await drain(controller) == ["own", "remote"]


async def test_a_reconciles_ec2_calls_take_its_namespaces_turn():
    class Recording(PlacesGateway):
        tenants: list = []

        async def describe_associations(self, region, instance_ids, account=""):
            self.tenants.append(current_tenant())
            return await super().describe_associations(region, instance_ids, account)

    gateway = Recording()
    controller = controller_with(gateway, binding("own"))
    await controller.start()
    try:
        while not gateway.tenants:
            await asyncio.sleep(0.01)
    finally:
        for task in controller._tasks:
            task.cancel()
    assert gateway.tenants[0] == "team"
