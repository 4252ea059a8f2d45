"""The operator's reads and writes of bindings and Events: status, the finalizer, Events.

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

from ..core.api import API_VERSION, COMPONENT, CRD_NAME, FINALIZER, GROUP, KIND, PLURAL, POLICY_PLURAL, SET_PLURAL, VERSION
from ..core.model import Binding

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
WRITERS = 16  # calls at once: status and finalizer patches of a burst (adopting 10,000 bindings is 20,000 writes)
CHANGED = (409, 422)  # a JSON patch's test failed: the object changed since the version tested


class KubeConfigMissing(Exception):
    """Neither in-cluster configuration nor a usable kubeconfig."""


def check_kube_config() -> None:
    """Fail fast, in one line, when there is no way to reach a Kubernetes API server."""
    try:
        load_api_client().close()
    except (kubernetes.config.ConfigException, OSError) as error:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise KubeConfigMissing(f"the in-cluster Kubernetes configuration is unusable: {error}") from None
        raise KubeConfigMissing(
            "no Kubernetes configuration: not running in a cluster (KUBERNETES_SERVICE_HOST is unset) and "
            f"no usable kubeconfig (set KUBECONFIG or create ~/.kube/config): {error}") from None


def load_api_client(connections: int | None = None) -> kubernetes.client.ApiClient:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config; at most
    ``connections`` kept open (the client's default: five per CPU)."""
    configuration = kubernetes.client.Configuration()
    if connections is not None:
        configuration.connection_pool_maxsize = connections
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
    def __init__(self, api_client: kubernetes.client.ApiClient, max_concurrency: int = WRITERS, cache_size: int = 4096):
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._extensions = kubernetes.client.ApiextensionsV1Api(api_client)
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

    async def binding(self, namespace: str, name: str) -> Binding | None:
        """The binding as the API server has it now; None if it is gone."""
        body = await self.binding_body(namespace, name)
        return Binding.from_body(body) if body is not None else None

    async def binding_body(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The binding's whole body as the API server has it now; None if it is gone."""
        try:
            return await self._run(self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def list_policies(self) -> list[dict[str, Any]]:
        """Every InstanceProfilePolicy; none while their CRD is not installed."""
        try:
            return (await self._run(self._custom.list_cluster_custom_object, GROUP, VERSION, POLICY_PLURAL))["items"]
        except ApiException as error:
            if error.status == 404:
                return []
            raise

    async def list_namespaces(self) -> list[dict[str, Any]]:
        listed = await self._run(self._core.list_namespace)
        return [{"metadata": {"name": ns.metadata.name, "labels": ns.metadata.labels or {}}} for ns in listed.items]

    async def crd_deleting(self, name: str = CRD_NAME) -> bool:
        """Whether the CRD ``name`` (the InstanceProfileBinding CRD unless told) is being deleted or
        is gone (an uninstall)."""
        try:
            crd = await self._run(self._extensions.read_custom_resource_definition, name)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return crd.metadata.deletion_timestamp is not None

    async def finalized_bindings(self, namespaces: tuple[str, ...], label_selector: str = "") -> list[Binding]:
        """Every binding, in ``namespaces`` or all, with labels that ``label_selector`` selects, that
        still carries the operator's finalizer."""
        if namespaces:
            found = [item for ns in namespaces for item in (await self._run(
                self._custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, label_selector=label_selector))["items"]]
        else:
            found = (await self._run(self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                     label_selector=label_selector))["items"]
        return [b for b in map(Binding.from_body, found) if b.finalized]

    async def add_finalizer(self, binding: Binding, seen: tuple[str, tuple[str, ...]] | None = None) -> Binding | None:
        """Put the operator's finalizer on ``binding``, keeping any other; the binding with it, or None
        if it is gone, being deleted or created anew. ``seen``, the resource version and finalizers a
        watch event showed, spares reading the binding first unless it changed since. None too if it
        changed between the read and the write (the caller looks again)."""
        if seen is not None:
            try:
                body = await self._patch_finalizers(binding, *seen, add=True)
                return Binding.from_body(body) if body is not None else None
            except ApiException as error:
                if error.status not in CHANGED:
                    raise
        body = await self.binding_body(binding.namespace, binding.name)
        meta = (body or {}).get("metadata", {})
        if body is None or meta.get("uid") != binding.uid or meta.get("deletionTimestamp"):
            return None
        finalizers = tuple(meta.get("finalizers") or ())
        if FINALIZER not in finalizers:
            try:
                body = await self._patch_finalizers(binding, meta["resourceVersion"], finalizers, add=True)
            except ApiException as error:
                if error.status in CHANGED:
                    return None
                raise
        return Binding.from_body(body) if body is not None else None

    async def remove_finalizer(self, binding: Binding) -> None:
        """Drop the operator's finalizer, whatever else holds the binding; gone already, or created
        anew (another UID), is fine. Raises ApiException if it changed between the read and the write."""
        body = await self.binding_body(binding.namespace, binding.name)
        meta = (body or {}).get("metadata", {})
        finalizers = tuple(meta.get("finalizers") or ())
        if body is not None and meta.get("uid") == binding.uid and FINALIZER in finalizers:
            await self._patch_finalizers(binding, meta["resourceVersion"], finalizers, add=False)

    async def _patch_finalizers(self, binding: Binding, version: str, finalizers: tuple[str, ...], add: bool) -> dict[str, Any] | None:
        """Set the finalizers to ``finalizers`` with ours added or taken out, if the binding is still
        at ``version`` (a JSON patch's test); the body written, None if the binding is gone."""
        mine = [*finalizers, FINALIZER] if add else [f for f in finalizers if f != FINALIZER]
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "add", "path": "/metadata/finalizers", "value": mine},  # "add" sets a member that exists
        ]
        try:
            return await self._run(self._custom.patch_namespaced_custom_object, GROUP, VERSION, binding.namespace, PLURAL,
                                   binding.name, patch, _content_type="application/json-patch+json")
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def create_binding(self, body: dict[str, Any]) -> None:
        """Create a binding (a set's child); one that exists already is left to the next pass."""
        try:
            await self._run(self._custom.create_namespaced_custom_object, GROUP, VERSION,
                            body["metadata"]["namespace"], PLURAL, body)
        except ApiException as error:
            if error.status != 409:
                raise

    async def patch_binding_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        """Merge-patch a binding's spec (a set's child put back); a binding gone is left alone."""
        try:
            await self._run(self._custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
                            {"spec": spec}, _content_type=MERGE_PATCH)
        except ApiException as error:
            if error.status != 404:
                raise

    async def delete_binding(self, namespace: str, name: str, uid: str) -> None:
        """Delete the binding with this UID (a set's child), if it still exists."""
        try:
            await self._run(self._custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
                            body=kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(uid=uid)))
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    async def patch_set_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch a set's status; False if the set is gone."""
        try:
            await self._run(self._custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace,
                            SET_PLURAL, name, {"status": status}, _content_type=MERGE_PATCH)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def record(self, binding: Binding, event: Event, kind: str = KIND) -> None:
        """Post an Event about ``binding`` (or an object of another ``kind`` with the same
        namespace, name and uid), or count a repeat of one already posted."""
        key = (binding.uid, event.type, event.reason, event.message)
        now = datetime.now(timezone.utc)
        self.events_recorded += 1
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
            log.info("%s: %s: %s", binding.ref, event.reason, event.message)  # a repeat is only counted, not logged again
            name = f"{binding.name}.{secrets.token_hex(8)}"
            await self._run(self._core.create_namespaced_event, binding.namespace,
                            self._event_body(binding, event, name, now, kind))
            self._events[key] = (name, 1)
            while len(self._events) > self._cache_size:
                self._events.popitem(last=False)
        except ApiException as error:  # an Event is never worth failing a reconcile for
            log.warning("could not record event %s for %s: %s", event.reason, binding.ref, error.reason)

    def _event_body(self, binding: Binding, event: Event, name: str, now: datetime,
                    kind: str = KIND) -> kubernetes.client.CoreV1Event:
        client = kubernetes.client
        return client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=name, namespace=binding.namespace),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION, kind=kind, name=binding.name, namespace=binding.namespace, uid=binding.uid,
            ),
            type=event.type, reason=event.reason, message=event.message[:1024],
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT, reporting_instance=self._instance,
        )
