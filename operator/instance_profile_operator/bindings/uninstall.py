"""Uninstalling is not deleting: when the InstanceProfileBinding CRD itself is being deleted,
Kubernetes deletes every binding, and the operator lets them go without touching EC2, whatever
their ``deletionPolicy``: every association stays as it is.

Two paths lead here. A binding whose finalizer runs while the CRD has a ``deletionTimestamp``
is released by the finalizer. And since kopf stops serving a resource whose CRD is terminating
(its API no longer offers ``patch``), the ``Uninstaller`` also sweeps every binding that still
carries the finalizer, so the CRD deletion completes. Both go through one ``Releases``, so a
binding both reach gets one ``Released`` Event, and the count logged is of both paths.
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


class Releases:
    """Bindings let go on uninstall, each told once why it goes without an EC2 call."""

    def __init__(self, writer: KubeWriter):
        self.writer = writer
        self._released: set[str] = set()

    def __len__(self) -> int:
        return len(self._released)

    async def release(self, binding: Binding) -> bool:
        """Record the ``Released`` Event, unless the other path did already (the finalizer goes next)."""
        if binding.uid in self._released:
            return False
        self._released.add(binding.uid)
        await self.writer.record(binding, Event("Normal", Reason.RELEASED, MESSAGE))
        return True


class Uninstaller:
    """Watches the CRD; once it is being deleted, releases every binding still finalized."""

    def __init__(self, releases: Releases, namespaces: tuple[str, ...], forget_all: Callable[[], None],
                 retry_base: float = 1.0, retry_max: float = 30.0):
        self._releases = releases
        self._writer = releases.writer
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
                swept = 0
                for binding in bindings:
                    swept += await self._releases.release(binding)
                    await self._writer.remove_finalizer(binding)
                log.info("released %d bindings on uninstall (%d by this sweep, the rest by their finalizer)",
                         len(self._releases), swept)
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
