"""Uninstalling is not deleting: when the InstanceProfileBinding CRD itself is being deleted,
Kubernetes deletes every binding, and the operator lets them go without touching EC2, whatever
their ``deletionPolicy``: every association stays as it is.

Two paths lead here. A binding whose finalizer runs while the CRD has a ``deletionTimestamp``
is released by the finalizer. And since kopf stops serving a resource whose CRD is terminating
(its API no longer offers ``patch``), the ``Uninstaller`` also sweeps every binding that still
carries the finalizer, so the CRD deletion completes. Both go through one ``Releases``, so a
binding both reach gets one ``Released`` Event, and the count logged is of both paths.

A set's children are bindings, released as any binding when the InstanceProfileBinding CRD goes.
When the InstanceProfileBindingSet CRD goes (first, or alone), Kubernetes deletes every set; the
garbage collector cannot be relied on for their children then (it retries an owner whose kind is
no longer served until the CRD is back, and would delete them after a re-install, as a user's
deletion). So the sets' uninstaller deletes every child itself and releases it, and their
finalizer releases them too while that CRD is being deleted or gone: the sets that declared them
were uninstalled, not deleted by a user.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..core.api import CRD_NAME, SET_CRD_NAME, SET_LABEL, Reason
from ..core.membership import controller_uid
from ..core.model import Binding
from ..kube.writer import Event, KubeWriter
from ..runtime.workqueue import backoff

log = logging.getLogger(__name__)

MESSAGE = ("the InstanceProfileBinding CRD is being deleted (an uninstall): the finalizer is released "
           "without touching EC2, so the instance keeps its instance profile")
SET_MESSAGE = ("the InstanceProfileBindingSet CRD is being deleted (an uninstall): this set's binding is released "
               "without touching EC2, so the instance keeps its instance profile")


@dataclass(frozen=True)
class Uninstalled:
    """What one CRD's deletion releases."""

    crd_name: str
    kind: str
    message: str  # the Released Event's
    label_selector: str  # of the bindings released ("": every binding)
    delete_first: bool  # whether the operator deletes them (Kubernetes does not)


BINDINGS = Uninstalled(CRD_NAME, "InstanceProfileBinding", MESSAGE, "", delete_first=False)
SET_CHILDREN = Uninstalled(SET_CRD_NAME, "InstanceProfileBindingSet", SET_MESSAGE, SET_LABEL, delete_first=True)


async def uninstall_reason(writer: KubeWriter, body: Mapping[str, Any]) -> str | None:
    """Why the binding ``body``, being deleted, goes without an EC2 call because of an uninstall;
    None when its deletion is a user's (it then follows its ``deletionPolicy``)."""
    if await writer.crd_deleting():
        return MESSAGE
    if controller_uid(body) is not None and await writer.crd_deleting(SET_CRD_NAME):
        return SET_MESSAGE
    return None


class Releases:
    """Bindings let go on uninstall, each told once why it goes without an EC2 call."""

    def __init__(self, writer: KubeWriter):
        self.writer = writer
        self._released: set[str] = set()

    def __len__(self) -> int:
        return len(self._released)

    async def release(self, binding: Binding, why: str = MESSAGE) -> bool:
        """Record the ``Released`` Event, unless the other path did already (the finalizer goes next)."""
        if binding.uid in self._released:
            return False
        self._released.add(binding.uid)
        await self.writer.record(binding, Event("Normal", Reason.RELEASED, why))
        return True


class Uninstaller:
    """Watches a CRD; once it is being deleted, releases every binding it takes with it that is still finalized."""

    def __init__(self, releases: Releases, namespaces: tuple[str, ...], forget_all: Callable[[], None],
                 retry_base: float = 1.0, retry_max: float = 30.0, uninstalled: Uninstalled = BINDINGS):
        self.uninstalled = uninstalled
        self._releases = releases
        self._writer = releases.writer
        self._namespaces = namespaces
        self._forget_all = forget_all
        self._retry = (retry_base, retry_max)
        self._sweep: asyncio.Task | None = None

    def on_crd_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        deleting = event_type != "DELETED" and bool(body.get("metadata", {}).get("deletionTimestamp"))
        if deleting and self._sweep is None:
            log.warning("the %s CRD is being deleted: releasing every %s without touching EC2; they are served again "
                        "once the CRD is re-created", self.uninstalled.kind,
                        "set's binding" if self.uninstalled.label_selector else "binding")
            self._forget_all()
            self._sweep = asyncio.create_task(self._release_all(), name="release-on-uninstall")
        elif not deleting and self._sweep is not None and self._sweep.done():
            self._sweep = None  # re-created: a later uninstall sweeps again

    async def _release_all(self) -> None:
        attempt = 0
        while True:
            try:
                uninstalled = self.uninstalled
                bindings = await self._writer.finalized_bindings(self._namespaces, uninstalled.label_selector)
                swept = 0
                for binding in bindings:
                    if uninstalled.delete_first:
                        await self._writer.delete_binding(binding.namespace, binding.name, binding.uid)
                    swept += await self._releases.release(binding, uninstalled.message)
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
