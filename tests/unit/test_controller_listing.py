"""Bindings new to a replica (listed at start-up, known on standby, or a burst of watched ones)
are described in bulk before they are reconciled."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

from instance_profile_operator.bindings.controller import Controller
from instance_profile_operator.bindings.registry import Registry
from instance_profile_operator.core.api import FINALIZER
from instance_profile_operator.core.model import Association, AssociationState, Binding, Target
from instance_profile_operator.core.policybook import PolicyBook
from instance_profile_operator.settings import Settings
from instance_profile_operator.core.tenancy import Tenancy

from ..support.waiting import until

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


class FinalizingWriter:
    """Adds and removes the finalizer as the API server would; records whose."""

    def __init__(self) -> None:
        self.finalized: list[str] = []
        self.removed: list[str] = []
        self.bodies: dict[tuple[str, str], dict] = {}

    async def add_finalizer(self, binding: Binding, seen=None) -> Binding:
        self.finalized.append(binding.name)
        return dataclasses.replace(binding, finalized=True)

    async def binding_body(self, namespace: str, name: str) -> dict | None:
        return self.bodies.get((namespace, name))

    async def remove_finalizer(self, binding: Binding) -> None:
        self.removed.append(binding.name)


def binding(n: int, namespace: str = "team") -> dict:
    """A binding reconciled before the restart: its status records an association."""
    return {"metadata": {"namespace": namespace, "name": f"b-{n}", "uid": f"u-{n}", "generation": 1, "finalizers": [FINALIZER]},
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


def created(n: int, namespace: str = "team") -> dict:
    """A binding just created: the controller has not added the finalizer yet, nothing is recorded."""
    body = binding(n, namespace)
    return {**body, "metadata": {**body["metadata"], "finalizers": []}, "status": {}}


async def test_a_burst_of_watched_new_bindings_gets_the_finalizer_then_is_looked_up_together_and_queued_once():
    gateway, writer = DescribingGateway(), FinalizingWriter()
    controller = Controller(Settings(region="us-east-1"), gateway, writer, Tenancy(enforcing=False))
    for n in range(450):
        controller.on_event("ADDED", created(n))
    assert len(controller.queue) == 0
    await asyncio.wait_for(queued(controller, 450), TIMEOUT)
    assert sorted(writer.finalized) == sorted(f"b-{n}" for n in range(450))  # one write each, before any lookup
    assert gateway.describes == [450]  # one lookup for the burst (the gateway sends 200 instances per request)
    for n in range(450):  # the watch brings each finalizer written: nothing new to do
        controller.on_event("MODIFIED", binding(n))
    assert len(controller.queue) == 450 and len(writer.finalized) == 450
    found = await controller.observer.association(Target("us-east-1", "i-0007"))
    assert found is not None and found.association_id == "iip-i-0007" and gateway.describes == [450]


async def test_a_single_new_binding_is_queued_as_soon_as_its_lookup_ends_and_a_change_after_it_at_once():
    gateway = DescribingGateway()
    controller = Controller(Settings(region="us-east-1"), gateway, SimpleNamespace(), Tenancy(enforcing=False))
    controller.on_event("ADDED", binding(1))
    await asyncio.wait_for(queued(controller, 1), TIMEOUT)
    assert gateway.describes == [1]
    await take(controller)
    changed = {**binding(1), "metadata": {**binding(1)["metadata"], "generation": 2}}
    controller.on_event("MODIFIED", changed)  # known already: no look-ahead
    assert len(controller.queue) == 1 and gateway.describes == [1]


async def test_new_bindings_no_policy_admits_cost_no_lookup():
    gateway = DescribingGateway()
    book = PolicyBook()
    book.on_namespace(None, {"metadata": {"name": "intruder", "labels": {}}})
    controller = Controller(Settings(region="us-east-1"), gateway, FinalizingWriter(), Tenancy(enforcing=True, book=book))
    for n in range(20):
        controller.on_event("ADDED", created(n, namespace="intruder"))
    await asyncio.wait_for(queued(controller, 20), TIMEOUT)  # queued all the same: their reconciles say they are denied
    assert gateway.describes == []
    assert controller.registry.instances_by_place() == {}


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


async def test_a_takeover_describes_what_the_standby_knew_at_once_and_its_watch_going_on_adds_no_work():
    gateway, writer = DescribingGateway(), FinalizingWriter()
    settled = [ready(binding(n), f"iip-i-{n:04d}") for n in range(300)]
    new = created(300)  # created while this replica stood by: no finalizer yet
    controller = Controller(Settings(region="us-east-1", workers=2), gateway, writer, Tenancy(enforcing=False),
                            registry=known_on_standby([*settled, new]))
    controller.take_over()
    await asyncio.wait_for(queued(controller, 301), TIMEOUT)
    assert writer.finalized == ["b-300"]  # by the new leader itself
    assert sorted(gateway.describes) == [1, 300]  # one batched pass, and the new binding's own lookup
    assert await asyncio.wait_for(take(controller), TIMEOUT) == ("team", "b-300")  # the one that needs work first
    assert controller.registry.get(("team", "b-300")).finalized
    for body in [*settled, binding(300)]:  # the watch goes on: what it brings of them changes nothing
        controller.on_event("MODIFIED", body)
    assert not any(controller.intake.holds(key) for key in controller.registry.keys())  # nothing to describe again
    assert len(controller.queue) == 300 and sorted(gateway.describes) == [1, 300]


async def test_a_takeover_runs_the_deletion_of_a_binding_deleted_while_no_replica_led():
    gateway, writer = DescribingGateway(), FinalizingWriter()
    deleted = {**binding(2), "metadata": {**binding(2)["metadata"], "deletionTimestamp": "2026-12-02T00:00:00Z"}}
    controller = Controller(Settings(region="us-east-1"), gateway, writer, Tenancy(enforcing=False),
                            registry=known_on_standby([ready(binding(1), "iip-i-0001"), deleted]))
    finalized: list[str] = []

    async def finalize(body, retry):
        finalized.append(body["metadata"]["name"])
    writer.bodies = {("team", "b-2"): deleted}
    controller.finalizer.finalize = finalize
    controller.take_over()
    await until(lambda: writer.removed == ["b-2"], TIMEOUT)
    assert finalized == ["b-2"] and writer.finalized == []


async def test_listed_bindings_without_the_finalizer_get_it_from_the_controller_one_write_each():
    gateway, writer = DescribingGateway(), FinalizingWriter()
    controller = Controller(Settings(region="us-east-1"), gateway, writer, Tenancy(enforcing=False))
    for n in range(3):  # a first install over existing bindings, say
        controller.on_event(None, created(n))
    controller.on_event(None, binding(3))  # finalized before the restart
    await asyncio.wait_for(queued(controller, 4), TIMEOUT)
    assert sorted(writer.finalized) == ["b-0", "b-1", "b-2"]
    assert all(controller.registry.get(("team", f"b-{n}")).finalized for n in range(4))


async def test_a_binding_created_as_the_lease_changed_hands_is_acted_on_from_the_watch():
    gateway, writer = DescribingGateway(), FinalizingWriter()
    controller = Controller(Settings(region="us-east-1"), gateway, writer, Tenancy(enforcing=False),
                            registry=known_on_standby([ready(binding(1), "iip-i-0001")]))
    controller.take_over()
    controller.on_event("ADDED", created(2))  # held by the watch during the handover, then passed on
    controller.on_event("MODIFIED", ready(binding(1), "iip-i-0001"))  # known: nothing to do
    await asyncio.wait_for(queued(controller, 2), TIMEOUT)
    assert writer.finalized == ["b-2"] and controller.registry.get(("team", "b-2")).finalized
