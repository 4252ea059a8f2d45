"""One kind of object listed page by page, then watched, on a thread of its own, feeding a
callback on the event loop that started it.

A watch that ends is resumed from the last resource version it delivered; one that expires
(410 Gone) or fails is listed again, and what vanished meanwhile is posted as deleted. Pages
keep a large kind (10,000 bindings) from being held in memory all at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Hashable

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
WATCH_SECONDS = 300  # the API server ends each watch by then; it is resumed from where it was
PAGE = 500
UNSERVED = "the resource is not served"

Post = Callable[[str | None, dict[str, Any]], Any]  # (None for listed, or the watch event's type; the body)


def name_of(body: dict[str, Any]) -> Hashable:
    return body["metadata"]["name"]


def namespaced_name_of(body: dict[str, Any]) -> Hashable:
    return body["metadata"].get("namespace", ""), body["metadata"]["name"]


def stub(key: Hashable) -> dict[str, Any]:
    """The body of a deletion seen only by its absence from a listing: its name alone."""
    namespace, name = key if isinstance(key, tuple) else ("", key)
    return {"metadata": {"namespace": namespace, "name": name} if namespace else {"name": name}}


class ListWatch:
    """Posts every object listed (event type None), then every watch event, to ``post``; ``listed``
    turns true once the first listing has been posted."""

    def __init__(self, api_client: kubernetes.client.ApiClient, kind: str, lister: Callable[..., Any], post: Post,
                 key_of: Callable[[dict[str, Any]], Hashable] = name_of):
        self.kind = kind
        self.listed = False
        self._api_client, self._lister, self._post, self._key_of = api_client, lister, post, key_of
        self._stop = threading.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._follow, args=(loop,), name=f"watch-{self.kind}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self, loop: asyncio.AbstractEventLoop) -> None:
        known: set[Hashable] = set()
        resource_version: str | None = None

        def on_loop(call: Callable[..., Any], *args: Any) -> None:
            try:
                loop.call_soon_threadsafe(call, *args)
            except RuntimeError:  # the loop is closed: the process is ending
                self._stop.set()

        def post(event_type: str | None, body: dict[str, Any]) -> None:
            on_loop(self._post, event_type, body)

        unserved = False
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    known, resource_version = self._list(known, post)
                    on_loop(setattr, self, "listed", True)  # after what was listed
                    if unserved:
                        log.info("listing %s: served again", self.kind)
                        unserved = False
                resource_version = self._watch(known, resource_version, post)
            except ApiException as error:
                resource_version = None
                if error.status == 404 and not unserved:  # said once an outage
                    log.warning("listing %s: %s; is its CustomResourceDefinition installed? Listing again every %.0f s",
                                self.kind, UNSERVED, RETRY_SECONDS)
                    unserved = True
                elif error.status not in (404, 410):
                    log.warning("listing %s: %s %s", self.kind, error.status, error.reason)
                self._stop.wait(RETRY_SECONDS)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                resource_version = None
                log.warning("watching %s: %s", self.kind, error)
                self._stop.wait(RETRY_SECONDS)

    def _list(self, before: set[Hashable], post: Callable[[str | None, dict[str, Any]], None]) -> tuple[set[Hashable], str]:
        """Post every object, a page at a time, and the deletion of what ``before`` had and the listing has not."""
        listed: set[Hashable] = set()
        token = None
        while True:
            page = self._plain(self._lister(limit=PAGE, _continue=token) if token else self._lister(limit=PAGE))
            for item in page["items"]:
                listed.add(self._key_of(item))
                post(None, item)
            token = page["metadata"].get("continue")
            if not token:
                break
        for key in before - listed:
            post("DELETED", stub(key))
        return listed, page["metadata"]["resourceVersion"]

    def _watch(self, known: set[Hashable], resource_version: str,
               post: Callable[[str | None, dict[str, Any]], None]) -> str | None:
        """Post watch events until the watch ends: the version to resume from (None once stopped).
        An expired version (410 Gone) raises ApiException: the caller lists again."""
        watch = kubernetes.watch.Watch()
        for event in watch.stream(self._lister, resource_version=resource_version, timeout_seconds=WATCH_SECONDS):
            if self._stop.is_set():
                return None
            body = self._plain(event["object"])
            key = self._key_of(body)
            (known.discard if event["type"] == "DELETED" else known.add)(key)
            post(event["type"], body)
        return watch.resource_version or resource_version

    def _plain(self, obj: Any) -> dict[str, Any]:
        """Custom objects come as dicts, core objects as models: both as their JSON shape."""
        return obj if isinstance(obj, dict) else self._api_client.sanitize_for_serialization(obj)
