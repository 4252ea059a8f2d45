"""A PolicyBook kept current outside kopf: every InstanceProfilePolicy and every namespace,
listed then watched, each kind on a thread of its own.

The admission webhook runs on every replica, the standby included, and reads only this book: a
standby watches no binding, adds no finalizer, writes no status and calls no EC2. A watch that
ends or fails is listed again (what vanished meanwhile is forgotten); a policy CRD not installed
yet is retried.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from ..core.api import GROUP, POLICY_PLURAL, VERSION
from ..core.policybook import PolicyBook

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
WATCH_SECONDS = 300  # the API server ends each watch by then; it is started again from where it was


class BookWatch:
    """Feeds ``book`` on the event loop it was started from; ``book_if_known`` is None until
    both kinds have been listed once."""

    def __init__(self, api_client: kubernetes.client.ApiClient, book: PolicyBook | None = None):
        self.book = book or PolicyBook()
        self._api_client = api_client
        self._stop = threading.Event()
        self._listed: set[str] = set()

    @property
    def book_if_known(self) -> PolicyBook | None:
        return self.book if self._listed == {"policies", "namespaces"} else None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        custom = kubernetes.client.CustomObjectsApi(self._api_client)
        core = kubernetes.client.CoreV1Api(self._api_client)
        kinds: dict[str, tuple[Callable[..., Any], Callable[[str | None, dict[str, Any]], Any]]] = {
            "policies": (lambda **kw: custom.list_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL, **kw), self.book.on_policy),
            "namespaces": (core.list_namespace, self.book.on_namespace),
        }
        for kind, (lister, record) in kinds.items():
            threading.Thread(target=self._follow, args=(loop, kind, lister, record), name=f"book-{kind}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self, loop: asyncio.AbstractEventLoop, kind: str, lister: Callable[..., Any],
                record: Callable[[str | None, dict[str, Any]], Any]) -> None:
        known: set[str] = set()

        def post(event_type: str | None, body: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(record, event_type, body)

        while not self._stop.is_set():
            try:
                listed = self._plain(lister())
                names = {item["metadata"]["name"] for item in listed["items"]}
                for name in known - names:
                    post("DELETED", {"metadata": {"name": name}})
                for item in listed["items"]:
                    post(None, item)
                known = names
                loop.call_soon_threadsafe(self._listed.add, kind)
                stream = kubernetes.watch.Watch().stream(
                    lister, resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=WATCH_SECONDS)
                for event in stream:
                    if self._stop.is_set():
                        return
                    body = self._plain(event["object"])
                    if event["type"] == "ERROR":
                        break  # 410 Gone and the like: list again
                    name = body["metadata"]["name"]
                    (known.discard if event["type"] == "DELETED" else known.add)(name)
                    post(event["type"], body)
            except ApiException as error:
                (log.debug if error.status in (404, 410) else log.warning)("listing %s: %s %s", kind, error.status, error.reason)
                self._stop.wait(RETRY_SECONDS)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                log.warning("watching %s: %s", kind, error)
                self._stop.wait(RETRY_SECONDS)

    def _plain(self, obj: Any) -> dict[str, Any]:
        """Custom objects come as dicts, namespaces as models: both as their JSON shape."""
        return obj if isinstance(obj, dict) else self._api_client.sanitize_for_serialization(obj)
