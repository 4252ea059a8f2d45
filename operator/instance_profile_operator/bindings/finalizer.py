"""Deletion: what the finalizer does before a binding goes.

It removes only what the binding recorded (``custody``): the association in its status, and one
this process made for it whose status write had not landed, each in the account and region
recorded, and only while it still carries the recorded profile. The spec as it reads at deletion
decides nothing but ``deletionPolicy: Retain`` (which can only leave more in place). A binding
with no record, such as one no policy ever admitted, makes no EC2 call at all. It runs under the
binding's lock, after any reconcile of it, and reads the binding afresh. An association EC2
reports as ``associating`` is waited on, as is one this process made that EC2 does not show
yet. An uninstall (the CRD itself being deleted, or for a set's child the sets' CRD) touches nothing.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Mapping

from ..aws.ec2 import Ec2Gateway
from ..aws.observer import Observer
from ..core import custody
from ..core.api import GROUP, Reason
from ..core.decision import Disassociate, Settling
from ..core.faults import AwsFault
from ..core.model import Binding, Target
from ..core.status import Report
from ..kube.writer import Event, KubeWriter
from ..runtime.workqueue import KeyLocks, backoff
from ..settings import Settings
from .outcomes import Outcomes
from .registry import Key
from .uninstall import Releases, uninstall_reason

log = logging.getLogger(__name__)
NORMAL, WARNING = "Normal", "Warning"
Publish = Callable[..., Awaitable[bool]]
GONE = "InvalidAssociationID.NotFound"
SETTLING = "IncorrectState"  # e.g. disassociating an association that is still associating
BOOKKEEPING_PREFIXES = (f"{GROUP}/", "kopf.zalando.org/")  # annotations that look like the operator's; it reads none


class RetryLater(Exception):
    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


class Finalizer:
    def __init__(self, settings: Settings, observer: Observer, gateway: Ec2Gateway, writer: KubeWriter,
                 locks: KeyLocks[Key], outcomes: Outcomes, publish: Publish):
        self.settings = settings
        self.observer = observer
        self.gateway = gateway
        self.writer = writer
        self._locks = locks
        self._outcomes = outcomes
        self._publish = publish
        self.releases = Releases(writer)  # uninstall's, shared with the Uninstaller's sweep

    async def finalize(self, body: Mapping[str, Any], retry: int) -> None:
        """Undo the binding's record in EC2 before the finalizer goes; raises RetryLater to be called again."""
        binding = Binding.from_body(body)
        await self._warn_of_bookkeeping_annotations(binding, body)
        uninstalled = await uninstall_reason(self.writer, body)
        if uninstalled is not None:
            await self.releases.release(binding, uninstalled)
            return
        async with self._locks.hold(binding.key):
            current = await self.writer.binding(binding.namespace, binding.name)  # the status as last written
            if current is None or current.uid != binding.uid:
                return  # gone already (and maybe created anew: that one is not this one's to touch)
            records = custody.records(current.status, self._outcomes.made(binding.key))
            if current.spec.get("deletionPolicy") == "Retain":
                for record in records:
                    await self.writer.record(current, Event(NORMAL, Reason.RETAINED, (
                        f"deletionPolicy Retain: left association {record.association_id}")))
                log.info("%s: finalized (deletionPolicy is Retain)", binding.ref)
                return
            if records and not retry:  # kubectl shows it going, not Ready (kstatus: Terminating)
                removing = ", ".join(record.association_id for record in records)
                await self._publish(current, records[0].region, Report(
                    Reason.DELETING, f"binding deleted: removing association {removing}", reconciling=True,
                    association_known=False))
            for record in records:
                await self._remove(current, record, retry)
        log.info("%s: finalized (%s)", binding.ref, f"{len(records)} recorded association(s) handled" if records else "nothing recorded")

    async def _warn_of_bookkeeping_annotations(self, binding: Binding, body: Mapping[str, Any]) -> None:
        """Whoever may edit a binding may write its annotations: the operator keeps its bookkeeping
        in status and reads none of them, and says so (one Event, counted on repeats)."""
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        ignored = sorted(key for key in annotations if key.startswith(BOOKKEEPING_PREFIXES))
        if ignored:
            await self.writer.record(binding, Event(WARNING, Reason.ANNOTATION_IGNORED, (
                f"ignored annotations {', '.join(ignored)}: the operator keeps its bookkeeping in status, not in annotations")))

    async def _remove(self, binding: Binding, record: custody.Record, retry: int) -> None:
        try:
            observed = (await self.gateway.describe_associations_by_id(
                record.region, [record.association_id], record.account)).get(record.association_id)
            current = None
            if observed is None and record.instance_id is not None:
                current = await self.observer.association(Target(record.region, record.instance_id, record.account), fresh=True)
            action = custody.removal(record, observed, current)
            if isinstance(action, Settling):
                raise RetryLater(f"association {record.association_id} is {action.association.state.value}; waiting until it settles",
                                 backoff(retry, self.settings.settle_base_seconds, self.settings.settle_max_seconds))
            if not isinstance(action, Disassociate):
                log.info("%s: %s", binding.ref, action.why)
                return
            await self.gateway.disassociate(record.region, record.association_id, record.account)
        except AwsFault as fault:
            if fault.code == GONE:
                log.info("%s: association %s already gone", binding.ref, record.association_id)
                return
            delay = backoff(retry, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
            if fault.code == SETTLING:
                raise RetryLater(f"association {record.association_id} is settling: {fault}", delay) from None
            message = f"cannot disassociate the instance profile: {fault}"
            if retry >= fault.policy.quiet_attempts:
                stalled = fault.policy.stalled_after == 0
                await self.writer.record(binding, Event(WARNING, fault.policy.reason, message))
                await self._publish(binding, record.region, Report(
                    fault.policy.reason, message, reconciling=not stalled, stalled=stalled, association_known=False))
            raise RetryLater(message, delay) from None
        a = action.association
        self.observer.invalidate(Target(record.region, a.instance_id, record.account))
        await self.writer.record(binding, Event(NORMAL, Reason.DISASSOCIATED, (
            f"binding deleted: disassociated {a.profile_arn} from {a.instance_id} ({a.association_id})")))
