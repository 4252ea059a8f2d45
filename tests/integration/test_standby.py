"""A warm standby's knowledge of the bindings: listed in pages, then kept by a watch, until it hands the registry over."""

from __future__ import annotations

import asyncio
import threading

import pytest

from instance_profile_operator.bindings.standby import WarmStandby
from instance_profile_operator.kube import listwatch

from ..support.kube import Bindings, create_namespace, manifest
from ..support.waiting import wait_for


@pytest.fixture
def loop():
    """An event loop on a thread of its own, as the operator's: the standby posts to it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def on(loop, call):
    async def run():
        return call()
    return asyncio.run_coroutine_threadsafe(run(), loop).result(10)


def test_the_standby_knows_the_bindings_until_it_hands_them_over(api_client, crd, loop, monkeypatch):
    monkeypatch.setattr(listwatch, "PAGE", 2)  # five bindings: three pages
    namespace = create_namespace(api_client)
    other = create_namespace(api_client)  # outside the standby's namespaces: never known
    bindings, elsewhere = Bindings(api_client, namespace), Bindings(api_client, other)
    for n in range(5):
        bindings.create(manifest(f"b-{n}", f"i-{n:017x}"))
    elsewhere.create(manifest("not-ours", "i-00000000000000099"))
    standby = WarmStandby(api_client, (namespace,), "us-east-1")
    on(loop, standby.start)

    def known() -> set[str]:
        return {name for _, name in on(loop, standby.registry.keys)}

    wait_for(lambda: known() == {f"b-{n}" for n in range(5)}, what="every binding listed, page by page")
    bindings.create(manifest("new", "i-00000000000000010"))
    bindings.delete("b-0")
    bindings.patch_spec("b-1", {"deletionPolicy": "Retain"})
    wait_for(lambda: known() == {"b-1", "b-2", "b-3", "b-4", "new"}, what="a new binding known, a deleted one forgotten")
    wait_for(lambda: on(loop, lambda: standby.registry.get((namespace, "b-1")).generation) == 2, what="a spec change seen")
    assert not bindings.get("new")["metadata"].get("finalizers") and "status" not in bindings.get("new")  # it only read

    registry = on(loop, standby.hand_over)
    assert registry is standby.registry
    bindings.create(manifest("after", "i-00000000000000011"))  # as the new leader starts: held for it
    forwarded: list[tuple[str | None, str]] = []
    wait_for(lambda: on(loop, lambda: len(standby._held)) == 1, what="the event held until the leader asks for it")
    on(loop, lambda: standby.forward(lambda event_type, body: forwarded.append((event_type, body["metadata"]["name"]))))
    bindings.delete("b-2")
    wait_for(lambda: on(loop, lambda: list(forwarded)) == [("ADDED", "after"), ("DELETED", "b-2")],
             what="the standby's watch passing what it sees to the new leader")
    assert "after" not in known() and "b-2" in known()  # from the handover on, kopf's watch feeds the registry
    on(loop, standby.stop)  # kopf's watch has begun
    bindings.create(manifest("later", "i-00000000000000012"))
    watching = f"watch-bindings-{namespace}"
    wait_for(lambda: all(t.name != watching for t in threading.enumerate()), what="the watch to end at its next event")
    assert [name for _, name in on(loop, lambda: list(forwarded))] == ["after", "b-2"]


def test_a_replica_that_never_stood_by_hands_over_nothing(api_client, crd, loop):
    assert on(loop, WarmStandby(api_client, (), "us-east-1").hand_over) is None
