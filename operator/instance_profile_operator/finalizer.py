"""Deletion: what the finalizer does before a binding goes.

It describes the instance afresh and disassociates only when the binding owns the instance, its
policy is ``Delete`` and the association is the one it manages (``decide_deletion``), in the
account the binding acted in. An uninstall (the CRD itself being deleted) touches nothing.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Awaitable, Callable, Mapping

from .api import Reason
from .decision import Disassociate, decide_deletion
from .ec2 import Ec2Gateway
from .faults import AwsFault, FaultKind
from .kube import Event, KubeWriter
from .model import Binding, InvalidSpec
from .observer import Observer
from .registry import Key, Registry
from .settings import Settings
from .status import Report
from .uninstall import release_on_uninstall
from .workqueue import KeyLocks, backoff

log = logging.getLogger(__name__)
NORMAL, WARNING = "Normal", "Warning"
Publish = Callable[..., Awaitable[bool]]


class RetryLater(Exception):
    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


class Finalizer:
    def __init__(self, settings: Settings, registry: Registry, observer: Observer, gateway: Ec2Gateway,
                 writer: KubeWriter, locks: KeyLocks[Key], publish: Publish):
        self.settings = settings
        self.registry = registry
        self.observer = observer
        self.gateway = gateway
        self.writer = writer
        self._locks = locks
        self._publish = publish

    async def finalize(self, body: Mapping[str, Any], retry: int) -> None:
        """Undo the binding in EC2 before the finalizer goes; raises RetryLater to be called again."""
        binding = Binding.from_body(body)
        if await self.writer.crd_deleting():
            await release_on_uninstall(self.writer, binding)
            return
        self.registry.upsert(binding)
        try:
            desired = binding.desired(self.settings.region)
        except InvalidSpec:
            return  # it never managed anything
        target = self.registry.target(binding)  # in the account it acted in, whatever policies say now
        assert target is not None
        desired = replace(desired, target=target)
        owner = self.registry.owner(target)
        async with self._locks.hold(binding.key):
            try:
                association = await self.observer.association(target, fresh=True)
                action = decide_deletion(desired, binding.status.get("associationId"), association,
                                         owner is None or owner.key == binding.key)
                if isinstance(action, Disassociate):
                    await self.gateway.disassociate(target.region, action.association.association_id, target.account)
                    self.observer.invalidate(target)
            except AwsFault as fault:
                if fault.kind in (FaultKind.STALE_OBSERVATION, FaultKind.INSTANCE_NOT_FOUND):
                    log.info("%s: association already gone (%s)", binding.ref, fault)
                    return
                delay = backoff(retry, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
                message = f"cannot disassociate the instance profile: {fault}"
                if retry >= fault.policy.quiet_attempts:
                    stalled = fault.policy.stalled_after == 0
                    await self.writer.record(binding, Event(WARNING, fault.policy.reason, message))
                    await self._publish(binding, target.region, Report(
                        fault.policy.reason, message, reconciling=not stalled, stalled=stalled, association_known=False))
                raise RetryLater(message, delay) from None
        if isinstance(action, Disassociate):
            a = action.association
            await self.writer.record(binding, Event(NORMAL, Reason.DISASSOCIATED, f"binding deleted: disassociated {a.profile_arn} from {target.instance_id} ({a.association_id})"))
        elif desired.retain and association is not None:
            await self.writer.record(binding, Event(NORMAL, Reason.RETAINED, f"deletionPolicy Retain: left {association.profile_arn} on {target.instance_id} ({association.association_id})"))
        log.info("%s: finalized (%s)", binding.ref, getattr(action, "why", "disassociated"))
