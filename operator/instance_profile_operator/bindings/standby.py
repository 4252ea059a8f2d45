"""A standby's knowledge of the bindings: listed and watched (``ListWatch``, read-only) while
another replica leads, into the registry that this replica's controller takes over with the
Lease, so that a new leader reconciles at once instead of listing first.

A standby reads and nothing else: it adds no finalizer, writes no status or Event and makes no
EC2 call. What it cannot know (the EC2 side) the new leader learns with one batched describe.
kopf's watch begins only once its listing ends (7 s at 10,000 bindings), so the standby's watch
goes on after the handover and passes what it sees to the new leader until then: a binding
created as the Lease changed hands is acted on at once.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import kubernetes

from ..core.api import GROUP, PLURAL, VERSION
from ..core.model import Binding
from ..kube.listwatch import ListWatch, namespaced_name_of
from .registry import Registry

log = logging.getLogger(__name__)


class WarmStandby:
    """Keeps ``registry`` current from its own watch of the bindings (of ``namespaces``, or all)
    until ``hand_over``; from then on kopf's watch feeds the controller."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespaces: tuple[str, ...], default_region: str):
        self.registry = Registry(default_region)
        custom = kubernetes.client.CustomObjectsApi(api_client)
        if namespaces:
            listers = {f"bindings-{namespace}": self._namespaced(custom, namespace) for namespace in namespaces}
        else:
            listers = {"bindings": lambda **kw: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)}
        self._watches = [ListWatch(api_client, kind, lister, self._record, namespaced_name_of) for kind, lister in listers.items()]
        self._open = self._started = False
        self._forward: Callable[[str | None, dict[str, Any]], None] | None = None
        self._holding = False  # handed over, ``forward`` not called yet
        self._held: list[tuple[str | None, dict[str, Any]]] = []  # seen meanwhile

    @staticmethod
    def _namespaced(custom: kubernetes.client.CustomObjectsApi, namespace: str) -> Any:
        return lambda **kw: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kw)

    def start(self) -> None:
        """Start watching: once this replica finds the Lease held by another."""
        self._open = self._started = True
        for watch in self._watches:
            watch.start()

    def hand_over(self) -> Registry | None:
        """Give up the registry (what the watch had not delivered yet, kopf's listing brings); None if
        this replica never stood by (it took a free Lease at once). The watch goes on until ``stop``,
        its events held for ``forward``."""
        if not self._started:
            return None
        self._open, self._holding = False, True
        log.info("taking over %d bindings known on standby%s", len(self.registry),
                 "" if all(watch.listed for watch in self._watches) else " (not all listed yet: kopf's listing brings the rest)")
        return self.registry

    def forward(self, to: Callable[[str | None, dict[str, Any]], None]) -> None:
        """Pass every event from now on (and those since the handover) to ``to``, until ``stop``."""
        self._forward, self._holding = to, False
        held, self._held = self._held, []
        for event_type, body in held:
            to(event_type, body)

    @property
    def forwarding(self) -> bool:
        return self._forward is not None

    def stop(self) -> None:
        """Stop watching, recording and forwarding (each watch's daemon thread ends at its stream's next event)."""
        self._open, self._holding, self._forward, self._held = False, False, None, []
        for watch in self._watches:
            watch.stop()

    def _record(self, event_type: str | None, body: dict[str, Any]) -> None:
        if not self._open:  # handed over: the controller's registry is kopf's to feed now
            if self._forward is not None:
                self._forward(event_type, body)
            elif self._holding:
                self._held.append((event_type, body))
            return
        binding = Binding.from_body(body)
        if event_type == "DELETED":
            self.registry.remove(binding.key)
        else:
            self.registry.upsert(binding)
