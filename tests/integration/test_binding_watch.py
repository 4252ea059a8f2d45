"""The bindings' watch: on standby, listed in pages and kept in a registry, read-only; handed over
with the Lease, then feeding the leader's controller without listing again."""

from __future__ import annotations

import asyncio
import threading

import pytest

from instance_profile_operator.bindings.watch import BindingWatch
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
    standby = BindingWatch(api_client, (namespace,), "us-east-1")
    on(loop, standby.stand_by)

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
    assert "after" not in known() and "b-2" in known()  # from the handover on, the controller keeps its registry
    bindings.create(manifest("later", "i-00000000000000012"))  # the same watch goes on: nothing listed again
    wait_for(lambda: on(loop, lambda: list(forwarded))[2:] == [("ADDED", "later")], what="the watch going on")
    on(loop, standby.stop)  # the operator stops
    bindings.create(manifest("after-stop", "i-00000000000000013"))
    watching = f"watch-bindings-{namespace}"
    wait_for(lambda: all(t.name != watching for t in threading.enumerate()), what="the watch to end at its next event")
    assert [name for _, name in on(loop, lambda: list(forwarded))] == ["after", "b-2", "later"]


def test_a_replica_that_never_stood_by_hands_over_nothing_and_watches_once_it_leads(api_client, crd, loop):
    namespace = create_namespace(api_client)
    bindings = Bindings(api_client, namespace)
    bindings.create(manifest("old", "i-00000000000000001"))
    watch = BindingWatch(api_client, (namespace,), "us-east-1")
    assert on(loop, watch.hand_over) is None
    forwarded: list[tuple[str | None, str]] = []
    on(loop, lambda: watch.forward(lambda event_type, body: forwarded.append((event_type, body["metadata"]["name"]))))
    wait_for(lambda: on(loop, lambda: list(forwarded)) == [(None, "old")], what="the listing, passed on as listed")
    bindings.create(manifest("new", "i-00000000000000002"))
    wait_for(lambda: on(loop, lambda: list(forwarded))[1:] == [("ADDED", "new")], what="then the watch")
    assert len(watch.registry) == 0  # the controller's to keep
    on(loop, watch.stop)
