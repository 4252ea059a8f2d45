"""A PolicyBook kept current outside kopf: every InstanceProfilePolicy and every namespace,
listed then watched (``ListWatch``), each kind on a thread of its own.

The admission webhook runs on every replica, the standby included, and reads only this book: a
standby adds no finalizer, writes no status and calls no EC2. A policy CRD not installed yet is
retried.
"""

from __future__ import annotations

import kubernetes

from ..core.api import GROUP, POLICY_PLURAL, VERSION
from ..core.policybook import PolicyBook
from .listwatch import ListWatch


class BookWatch:
    """Feeds ``book`` on the event loop it was started from; ``book_if_known`` is None until
    both kinds have been listed once."""

    def __init__(self, api_client: kubernetes.client.ApiClient, book: PolicyBook | None = None):
        self.book = book or PolicyBook()
        custom = kubernetes.client.CustomObjectsApi(api_client)
        core = kubernetes.client.CoreV1Api(api_client)
        self._watches = (
            ListWatch(api_client, "policies", lambda **kw: custom.list_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL, **kw),
                      self.book.on_policy),
            ListWatch(api_client, "namespaces", core.list_namespace, self.book.on_namespace),
        )

    @property
    def book_if_known(self) -> PolicyBook | None:
        return self.book if all(watch.listed for watch in self._watches) else None

    def start(self) -> None:
        for watch in self._watches:
            watch.start()

    def stop(self) -> None:
        for watch in self._watches:
            watch.stop()
