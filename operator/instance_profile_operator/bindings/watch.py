"""The operator's watch of the bindings: listed in pages, then watched (``ListWatch``), on every
replica, leader or standby.

While another replica leads, it keeps ``registry`` current and does nothing else: no finalizer,
no write, no EC2 call. The registry goes to this replica's controller with the Lease, so a new
leader reconciles at once instead of listing first (what it cannot know, the EC2 side, it learns
with one batched describe), and the same watch goes on feeding the controller: nothing is listed
again and nothing seen as the Lease changed hands is missed. A replica that never stood by (it
took a free Lease at once, or runs alone) starts the watch when it leads.

kopf does not watch the bindings: its per-object memory and workers cost more than the bindings
themselves at 10,000 (the finalizer is ``Lifecycle``'s).
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

Forward = Callable[[str | None, dict[str, Any]], None]  # (None for listed, or the watch event's type; the body)


class BindingWatch:
    def __init__(self, api_client: kubernetes.client.ApiClient, namespaces: tuple[str, ...], default_region: str):
        self.registry = Registry(default_region)
        custom = kubernetes.client.CustomObjectsApi(api_client)
        if namespaces:
            listers = {f"bindings-{namespace}": self._namespaced(custom, namespace) for namespace in namespaces}
        else:
            listers = {"bindings": lambda **kw: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)}
        self._watches = [ListWatch(api_client, kind, lister, self._seen, namespaced_name_of) for kind, lister in listers.items()]
        self._standing_by = self._started = False
        self._forward: Forward | None = None
        self._held: list[tuple[str | None, dict[str, Any]]] = []  # seen between the handover and ``forward``

    @staticmethod
    def _namespaced(custom: kubernetes.client.CustomObjectsApi, namespace: str) -> Any:
        return lambda **kw: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kw)

    def stand_by(self) -> None:
        """Know the bindings, read-only: once this replica finds the Lease held by another."""
        self._standing_by = True
        self._start()

    def hand_over(self) -> Registry | None:
        """Give up the registry, on taking the Lease (what the watch had not listed yet, it delivers to
        ``forward``); None if this replica never stood by. Events are held until ``forward``."""
        if not self._started:
            return None
        self._standing_by = False
        log.info("taking over %d bindings known on standby%s", len(self.registry),
                 "" if all(watch.listed for watch in self._watches) else " (not all listed yet: the watch brings the rest)")
        return self.registry

    def forward(self, to: Forward) -> None:
        """Pass every event from now on (and those held since the handover) to ``to``, the leader's
        controller; start watching if this replica never stood by."""
        self._forward = to
        held, self._held = self._held, []
        for event_type, body in held:
            to(event_type, body)
        self._start()

    def stop(self) -> None:
        """Stop watching (each watch's daemon thread ends at its stream's next event) and passing anything on."""
        self._standing_by, self._forward, self._held = False, None, []
        for watch in self._watches:
            watch.stop()

    def _start(self) -> None:
        if not self._started:
            self._started = True
            for watch in self._watches:
                watch.start()

    def _seen(self, event_type: str | None, body: dict[str, Any]) -> None:
        if self._forward is not None:
            self._forward(event_type, body)
        elif self._standing_by:
            binding = Binding.from_body(body)
            if event_type == "DELETED":
                self.registry.remove(binding.key)
            else:
                self.registry.upsert(binding)
        else:  # handed over, not forwarded yet
            self._held.append((event_type, body))
