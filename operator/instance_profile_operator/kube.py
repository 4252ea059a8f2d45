"""Writes to the Kubernetes API that kopf does not make for us: status and Events.

The official client is synchronous; like the EC2 gateway, calls run on a small thread pool.
Events are aggregated the way client-go's recorder does it: a repeat of the same reason and
message on the same object bumps ``count`` and ``lastTimestamp`` of the existing Event
instead of creating another one, so a failing binding retried for hours leaves one Event.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import kubernetes
from kubernetes.client.exceptions import ApiException

from .api import API_VERSION, COMPONENT, GROUP, KIND, PLURAL, VERSION
from .model import Binding

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"


def load_api_client() -> kubernetes.client.ApiClient:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


class KubeWriter:
    def __init__(self, api_client: kubernetes.client.ApiClient, max_concurrency: int = 8, cache_size: int = 4096):
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="kube")
        self._events: OrderedDict[tuple[str, str, str, str], tuple[str, int]] = OrderedDict()
        self._cache_size = cache_size
        self._instance = f"{COMPONENT}-{socket.gethostname()}"
        self.status_patches = 0
        self.events_recorded = 0

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(call, *args, **kwargs))

    async def patch_status(self, binding: Binding, status: dict[str, Any]) -> bool:
        """Merge-patch the status subresource; False if the binding is gone."""
        self.status_patches += 1
        try:
            await self._run(
                self._custom.patch_namespaced_custom_object_status,
                GROUP, VERSION, binding.namespace, PLURAL, binding.name, {"status": status},
                _content_type=MERGE_PATCH,
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def record(self, binding: Binding, event: Event) -> None:
        """Post an Event about ``binding``, or count a repeat of one already posted."""
        key = (binding.uid, event.type, event.reason, event.message)
        now = datetime.now(timezone.utc)
        self.events_recorded += 1
        log.info("%s: %s: %s", binding.ref, event.reason, event.message)
        try:
            if key in self._events:
                name, count = self._events[key]
                self._events.move_to_end(key)
                try:
                    await self._run(
                        self._core.patch_namespaced_event, name, binding.namespace,
                        {"count": count + 1, "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ")},
                        _content_type=MERGE_PATCH,
                    )
                    self._events[key] = (name, count + 1)
                    return
                except ApiException as error:
                    if error.status != 404:  # expired (Events live an hour): post a new one
                        raise
            name = f"{binding.name}.{secrets.token_hex(8)}"
            await self._run(self._core.create_namespaced_event, binding.namespace, self._event_body(binding, event, name, now))
            self._events[key] = (name, 1)
            while len(self._events) > self._cache_size:
                self._events.popitem(last=False)
        except ApiException as error:  # an Event is never worth failing a reconcile for
            log.warning("could not record event %s for %s: %s", event.reason, binding.ref, error.reason)

    def _event_body(self, binding: Binding, event: Event, name: str, now: datetime) -> kubernetes.client.CoreV1Event:
        client = kubernetes.client
        return client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=name, namespace=binding.namespace),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION, kind=KIND, name=binding.name, namespace=binding.namespace, uid=binding.uid,
            ),
            type=event.type, reason=event.reason, message=event.message[:1024],
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT, reporting_instance=self._instance,
        )
