"""The set controller's passes with fakes at its edges (EC2's listing, the Kubernetes writer)."""

from __future__ import annotations

from typing import Any

from instance_profile_operator.core.membership import child_name
from instance_profile_operator.core.tenancy import Tenancy
from instance_profile_operator.settings import Settings
from instance_profile_operator.sets.controller import EXPECTATION_SECONDS, SetController

INSTANCES = ["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"]


class Listing:
    def __init__(self) -> None:
        self.calls = 0

    async def instances_tagged(self, region: str, tags: dict, account: str = "") -> list[str]:
        self.calls += 1
        return list(INSTANCES)


class Writer:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.patched: list[str] = []

    async def create_binding(self, body: dict[str, Any]) -> None:
        self.created.append(body["metadata"]["name"])

    async def patch_binding_spec(self, namespace: str, name: str, spec: dict) -> None:
        self.patched.append(name)

    async def delete_binding(self, namespace: str, name: str, uid: str) -> None:
        pass

    async def record(self, *_: Any, **__: Any) -> None:
        pass

    async def patch_set_status(self, *_: Any) -> bool:
        return True


def a_set(profile: str = "web") -> dict:
    return {"metadata": {"namespace": "team", "name": "web", "uid": "set-uid", "generation": 1},
            "spec": {"instanceSelector": {"tags": {"role": "web"}}, "iamInstanceProfile": {"name": profile}}}


def controller(clock) -> tuple[SetController, Listing, Writer]:
    listing, writer = Listing(), Writer()
    sets = SetController(Settings(region="us-east-1", resync_seconds=60), listing, writer, Tenancy(False), clock=clock)
    sets.on_set("ADDED", a_set())
    return sets, listing, writer


async def test_children_created_but_not_yet_watched_are_not_created_again(clock):
    sets, _, writer = controller(clock)
    await sets.reconcile(("team", "web"))
    assert sorted(writer.created) == sorted(child_name("web", i) for i in INSTANCES)
    clock.advance(1)  # a second pass (a child's event, the others' not here yet)
    await sets.reconcile(("team", "web"))
    assert len(writer.created) == 3
    clock.advance(EXPECTATION_SECONDS)  # never seen: made again
    await sets.reconcile(("team", "web"))
    assert len(writer.created) == 6


async def test_a_profile_change_lists_ec2_no_more(clock):
    sets, listing, writer = controller(clock)
    await sets.reconcile(("team", "web"))
    for instance_id in INSTANCES:  # the children, as the watch shows them
        body = {"metadata": {"namespace": "team", "name": child_name("web", instance_id), "uid": instance_id,
                             "labels": {"ec2.instanceprofiles.dev/set": "web"},
                             "ownerReferences": [{"kind": "InstanceProfileBindingSet", "uid": "set-uid", "controller": True}]},
                "spec": {"instanceId": instance_id, "iamInstanceProfile": {"name": "web"}, "deletionPolicy": "Delete"}}
        sets.on_child("ADDED", body)
    sets.on_set("MODIFIED", {**a_set("batch"), "metadata": {**a_set()["metadata"], "generation": 2}})
    await sets.reconcile(("team", "web"))
    assert listing.calls == 1 and len(writer.patched) == 3
