"""The Kubernetes writer's finalizer, against the real API server: added without losing another's,
and never on a binding that changed, went or is going since it was read."""

from __future__ import annotations

import asyncio

import pytest

from instance_profile_operator.core.api import FINALIZER, GROUP, PLURAL, VERSION
from instance_profile_operator.core.model import Binding
from instance_profile_operator.kube.writer import MERGE_PATCH, KubeWriter

from ..support.kube import Bindings, manifest

OTHER = "example.com/keep"


@pytest.fixture
def writer(api_client):
    writer = KubeWriter(api_client)
    yield writer
    writer.close()


def test_the_finalizer_is_added_beside_anothers(bindings: Bindings, writer: KubeWriter):
    bindings.create({**manifest("mine", "i-00000000000000001"), "metadata": {"name": "mine", "finalizers": [OTHER]}})
    known = Binding.from_body(bindings.get("mine"))
    finalized = asyncio.run(writer.add_finalizer(known))
    assert finalized is not None and finalized.finalized
    assert bindings.get("mine")["metadata"]["finalizers"] == [OTHER, FINALIZER]
    again = asyncio.run(writer.add_finalizer(known))  # there already: nothing written
    assert again is not None and bindings.get("mine")["metadata"]["finalizers"] == [OTHER, FINALIZER]
    bindings.drop_finalizers("mine")  # let the namespace go


def test_no_finalizer_on_a_binding_gone_recreated_or_being_deleted(bindings: Bindings, writer: KubeWriter):
    bindings.create(manifest("gone", "i-00000000000000002"))
    gone = Binding.from_body(bindings.get("gone"))
    bindings.delete("gone")
    assert asyncio.run(writer.add_finalizer(gone)) is None

    bindings.create(manifest("gone", "i-00000000000000002"))  # the same name, another object
    assert asyncio.run(writer.add_finalizer(gone)) is None
    assert not bindings.get("gone")["metadata"].get("finalizers")

    bindings.create({**manifest("going", "i-00000000000000003"), "metadata": {"name": "going", "finalizers": [OTHER]}})
    going = Binding.from_body(bindings.get("going"))
    bindings.delete("going")  # held by the other finalizer
    assert asyncio.run(writer.add_finalizer(going)) is None
    assert bindings.get("going")["metadata"]["finalizers"] == [OTHER]
    bindings.drop_finalizers("going")


def seen(body: dict) -> tuple[str, tuple[str, ...]]:
    return body["metadata"]["resourceVersion"], tuple(body["metadata"].get("finalizers") or ())


def test_the_finalizer_is_added_from_what_the_watch_showed_or_after_a_read_if_it_changed_since(bindings: Bindings, writer: KubeWriter):
    bindings.create(manifest("fresh", "i-00000000000000004"))
    event = bindings.get("fresh")
    assert asyncio.run(writer.add_finalizer(Binding.from_body(event), seen(event))).finalized
    assert bindings.get("fresh")["metadata"]["finalizers"] == [FINALIZER]

    bindings.create(manifest("stale", "i-00000000000000005"))
    event = bindings.get("stale")
    bindings.custom.patch_namespaced_custom_object(GROUP, VERSION, bindings.namespace, PLURAL, "stale",  # after the event seen
                                                   {"metadata": {"finalizers": [OTHER]}}, _content_type=MERGE_PATCH)
    assert asyncio.run(writer.add_finalizer(Binding.from_body(event), seen(event))).finalized
    assert bindings.get("stale")["metadata"]["finalizers"] == [OTHER, FINALIZER]  # the other's kept
    for name in ("fresh", "stale"):
        bindings.drop_finalizers(name)


def test_the_finalizer_comes_off_alone_and_never_off_a_binding_created_anew(bindings: Bindings, writer: KubeWriter):
    bindings.create({**manifest("both", "i-00000000000000006"), "metadata": {"name": "both", "finalizers": [OTHER, FINALIZER]}})
    asyncio.run(writer.remove_finalizer(Binding.from_body(bindings.get("both"))))
    assert bindings.get("both")["metadata"]["finalizers"] == [OTHER]
    bindings.drop_finalizers("both")

    bindings.create({**manifest("again", "i-00000000000000007"), "metadata": {"name": "again", "finalizers": [FINALIZER]}})
    old = Binding.from_body(bindings.get("again"))
    bindings.drop_finalizers("again")
    bindings.delete("again")
    bindings.create({**manifest("again", "i-00000000000000007"), "metadata": {"name": "again", "finalizers": [FINALIZER]}})
    asyncio.run(writer.remove_finalizer(old))  # not this one's
    assert bindings.get("again")["metadata"]["finalizers"] == [FINALIZER]
    bindings.drop_finalizers("again")
    asyncio.run(writer.remove_finalizer(old))  # gone or not ours: nothing to do, no error
