"""The Kubernetes writer's finalizer, against the real API server: added without losing another's,
and never on a binding that changed, went or is going since it was read."""

from __future__ import annotations

import asyncio

import pytest

from instance_profile_operator.core.api import FINALIZER
from instance_profile_operator.core.model import Binding
from instance_profile_operator.kube.writer import KubeWriter

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
