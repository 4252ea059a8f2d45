"""The policy book the admission webhook reads on every replica: listed, then kept by watches."""

from __future__ import annotations

import asyncio
import threading
import uuid

import kubernetes

from instance_profile_operator.core.api import GROUP, POLICY_PLURAL, VERSION
from instance_profile_operator.kube.bookwatch import BookWatch

from ..support.kube import create_namespace
from ..support.waiting import wait_for


def test_the_book_follows_policies_and_namespaces(api_client, crd):
    namespace = create_namespace(api_client, labels={"team": "a"})
    custom = kubernetes.client.CustomObjectsApi(api_client)
    core = kubernetes.client.CoreV1Api(api_client)
    listed, watched = f"listed-{uuid.uuid4().hex[:6]}", f"watched-{uuid.uuid4().hex[:6]}"

    def policy(name: str) -> dict:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfilePolicy", "metadata": {"name": name},
                "spec": {"namespaceSelector": {"matchLabels": {"team": "a"}}, "instanceProfiles": [{"name": "web-*"}]}}

    custom.create_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL, policy(listed))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    watch = BookWatch(api_client)

    async def start() -> None:  # on the loop it feeds the book on
        watch.start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        wait_for(lambda: watch.book_if_known is not None, what="both kinds listed")

        def names() -> set[str]:
            return {p.name for p in watch.book.policies}

        assert listed in names() and watch.book.labels(namespace)["team"] == "a"
        custom.create_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL, policy(watched))
        wait_for(lambda: watched in names(), what="a new policy seen")
        custom.delete_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL, listed)
        wait_for(lambda: listed not in names(), what="a deleted policy forgotten")
        core.patch_namespace(namespace, {"metadata": {"labels": {"team": "b"}}})
        wait_for(lambda: watch.book.labels(namespace)["team"] == "b", what="a relabelled namespace seen")
    finally:
        watch.stop()
        for name in (listed, watched):
            try:
                custom.delete_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL, name)
            except kubernetes.client.exceptions.ApiException:
                pass
        core.delete_namespace(namespace)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
