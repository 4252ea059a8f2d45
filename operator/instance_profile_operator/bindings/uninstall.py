"""Uninstalling is not deleting: when the InstanceProfileBinding CRD itself is being deleted,
Kubernetes deletes every binding, and the operator lets them go without touching EC2, whatever
their ``deletionPolicy``: every association stays as it is.

Two paths lead here. A binding whose finalizer runs while the CRD has a ``deletionTimestamp``
is released by the finalizer (``release_on_uninstall``). And since kopf stops serving a resource
whose CRD is terminating (its API no longer offers ``patch``), the ``Uninstaller`` also sweeps
every binding that still carries the finalizer, so the CRD deletion completes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Mapping

from ..core.api import Reason
from ..core.model import Binding
from ..kube.writer import Event, KubeWriter
from ..runtime.workqueue import backoff

log = logging.getLogger(__name__)

MESSAGE = ("the InstanceProfileBinding CRD is being deleted (an uninstall): the finalizer is released "
           "without touching EC2, so the instance keeps its instance profile")


async def release_on_uninstall(writer: KubeWriter, binding: Binding) -> None:
    """Record why the binding goes without an EC2 call (its finalizer is then removed)."""
    await writer.record(binding, Event("Normal", Reason.RELEASED, MESSAGE))


class Uninstaller:
    """Watches the CRD; once it is being deleted, releases every binding still finalized."""

    def __init__(self, writer: KubeWriter, namespaces: tuple[str, ...], forget_all: Callable[[], None],
                 retry_base: float = 1.0, retry_max: float = 30.0):
        self._writer = writer
        self._namespaces = namespaces
        self._forget_all = forget_all
        self._retry = (retry_base, retry_max)
        self._sweep: asyncio.Task | None = None

    def on_crd_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        deleting = event_type != "DELETED" and bool(body.get("metadata", {}).get("deletionTimestamp"))
        if deleting and self._sweep is None:
            log.warning("the InstanceProfileBinding CRD is being deleted: releasing every binding without "
                        "touching EC2; bindings are served again once the CRD is re-created")
            self._forget_all()
            self._sweep = asyncio.create_task(self._release_all(), name="release-on-uninstall")
        elif not deleting and self._sweep is not None and self._sweep.done():
            self._sweep = None  # re-created: a later uninstall sweeps again

    async def _release_all(self) -> None:
        attempt = 0
        while True:
            try:
                bindings = await self._writer.finalized_bindings(self._namespaces)
                for binding in bindings:
                    await release_on_uninstall(self._writer, binding)
                    await self._writer.remove_finalizer(binding)
                log.info("released %d bindings on uninstall", len(bindings))
                return
            except Exception as error:  # the API server may be busy deleting: keep at it
                delay = backoff(attempt, *self._retry)
                attempt += 1
                log.info("releasing bindings on uninstall: %s; retrying in %.1f s", getattr(error, "reason", error), delay)
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            await asyncio.gather(self._sweep, return_exceptions=True)
