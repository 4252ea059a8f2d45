"""Bindings listed at start-up are described in bulk before they are reconciled."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from instance_profile_operator.bindings.controller import Controller
from instance_profile_operator.bindings.registry import Registry
from instance_profile_operator.core.model import Association, AssociationState, Binding, Target
from instance_profile_operator.settings import Settings
from instance_profile_operator.core.tenancy import Tenancy

TIMEOUT = 5.0  # real seconds: reached only when a test fails
ARN = "arn:aws:iam::123456789012:instance-profile/web"


class DescribingGateway:
    """Answers describes with an association per instance; records how many instances each call names."""

    def __init__(self) -> None:
        self.describes: list[int] = []

    async def describe_associations(self, region, instance_ids, account=""):
        self.describes.append(len(instance_ids))
        return {i: Association(f"iip-{i}", i, ARN, "AIPA", AssociationState.ASSOCIATED) for i in instance_ids}

    def retain(self, places) -> None:
        pass

    def close(self) -> None:
        pass


def binding(n: int) -> dict:
    """A binding reconciled before the restart: its status records an association."""
    return {"metadata": {"namespace": "team", "name": f"b-{n}", "uid": f"u-{n}", "generation": 1},
            "spec": {"instanceId": f"i-{n:04d}", "iamInstanceProfile": {"name": "web"}},
            "status": {"associationId": f"iip-i-{n:04d}", "region": "us-east-1"}}


async def queued(controller: Controller, count: int) -> None:
    while len(controller.queue) < count:
        await asyncio.sleep(0.01)


async def test_listed_bindings_are_described_together_then_queued_with_what_was_found():
    gateway = DescribingGateway()
    controller = Controller(Settings(region="us-east-1"), gateway, SimpleNamespace(), Tenancy(enforcing=False))
    for n in range(450):
        controller.on_event(None, binding(n))
    assert len(controller.queue) == 0  # not before their instances are described
    await asyncio.wait_for(queued(controller, 450), TIMEOUT)
    assert gateway.describes == [450]  # one gateway call: 200 instances per request
    found = await controller.observer.association(Target("us-east-1", "i-0007"))
    assert found is not None and found.association_id == "iip-i-0007" and gateway.describes == [450]


async def test_a_watched_binding_is_queued_at_once():
    controller = Controller(Settings(region="us-east-1"), DescribingGateway(), SimpleNamespace(), Tenancy(enforcing=False))
    controller.on_event("ADDED", binding(1))
    assert len(controller.queue) == 1


def ready(body: dict, association_id: str) -> dict:
    """``body`` as a reconcile left it: Ready for its generation, with ``association_id`` recorded."""
    return {**body, "status": {"associationId": association_id, "region": "us-east-1",
                               "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]}}


async def test_listed_bindings_that_need_work_go_before_the_confirmation_of_the_others():
    gateway = DescribingGateway()
    controller = Controller(Settings(region="us-east-1", workers=2), gateway, SimpleNamespace(), Tenancy(enforcing=False))
    settled = [ready(binding(n), f"iip-i-{n:04d}") for n in range(300)]
    drifted = ready(binding(300), "iip-removed-while-down")  # EC2 shows another association now
    new = {**binding(301), "status": {}}  # created while no replica was leading
    stale = {**ready(binding(302), "iip-i-0302"), "metadata": {**binding(302)["metadata"], "generation": 2}}  # spec changed
    for body in [*settled[:150], drifted, *settled[150:], new, stale]:
        controller.on_event(None, body)
    await asyncio.wait_for(queued(controller, 303), TIMEOUT)
    order = [await asyncio.wait_for(take(controller), TIMEOUT) for _ in range(4)]
    assert set(order[:3]) == {("team", "b-300"), ("team", "b-301"), ("team", "b-302")}
    assert order[3] in {("team", f"b-{n}") for n in range(300)}


async def take(controller: Controller) -> tuple[str, str]:
    """The next key a worker would reconcile (done at once, so the tenant's limit does not hold the next)."""
    key = await controller.queue.get()
    controller.queue.done(key)
    return key


def known_on_standby(bodies: list[dict]) -> Registry:
    """What a standby's watch left in its registry (``WarmStandby``), without an API server."""
    registry = Registry("us-east-1")
    for body in bodies:
        registry.upsert(Binding.from_body(body))
    return registry


async def test_a_takeover_describes_what_the_standby_knew_at_once_and_kopfs_listing_adds_no_work():
    gateway = DescribingGateway()
    settled = [ready(binding(n), f"iip-i-{n:04d}") for n in range(300)]
    new = {**binding(300), "status": {}}  # created while this replica stood by
    controller = Controller(Settings(region="us-east-1", workers=2), gateway, SimpleNamespace(), Tenancy(enforcing=False),
                            registry=known_on_standby([*settled, new]))
    controller.take_over()
    await asyncio.wait_for(queued(controller, 301), TIMEOUT)
    assert gateway.describes == [300]  # one batched pass: the new binding records no association to describe
    assert await asyncio.wait_for(take(controller), TIMEOUT) == ("team", "b-300")  # the one that needs work first
    for body in [*settled, new]:  # kopf's listing, once it comes, finds nothing changed
        controller.on_event(None, body)
    assert controller._listing is None  # no listing pass to describe and queue them again
    assert len(controller.queue) == 300 and gateway.describes == [300]


async def test_the_first_resync_after_a_takeover_forgets_what_kopf_did_not_list():
    gateway = DescribingGateway()
    gone, kept = ready(binding(1), "iip-i-0001"), ready(binding(2), "iip-i-0002")
    controller = Controller(Settings(region="us-east-1"), gateway, SimpleNamespace(), Tenancy(enforcing=False),
                            registry=known_on_standby([gone, kept]))
    controller.take_over()
    controller.on_event(None, kept)  # kopf lists only this one: the other was deleted during the handover
    await controller.resync()
    assert controller.registry.keys() == [("team", "b-2")]
    await controller.resync()  # a binding kopf delivers later is known again
    controller.on_event("ADDED", gone)
    assert set(controller.registry.keys()) == {("team", "b-1"), ("team", "b-2")}
