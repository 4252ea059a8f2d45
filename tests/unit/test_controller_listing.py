"""Bindings listed at start-up are described in bulk before they are reconciled."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from instance_profile_operator.bindings.controller import Controller
from instance_profile_operator.core.model import Association, AssociationState, Target
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
