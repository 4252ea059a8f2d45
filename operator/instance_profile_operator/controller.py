"""The reconcile loop: watch events in, one decided EC2 step and a status write out.

Workers take binding keys from a work queue. Each reconcile observes (batched), asks the
decision core for the one next action, performs it, renders status and Events, and says when
to look again: soon while EC2 settles, after a capped, jittered backoff when something
failed, or not at all when in sync (the periodic resync covers drift). Deletion runs from
the finalizer handler through the same observer and gateway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from . import status
from .api import Reason
from .decision import (
    Action, Associate, Disassociate, InSync, InstanceGone, LookUpInstance, Replace, Settling, WaitForInstance,
    decide, decide_deletion, is_adoption, is_drift,
)
from .ec2 import Ec2Gateway
from .faults import POLICIES, AwsFault, FaultKind, stalled_and_next_try
from .kube import Event, KubeWriter
from .metrics import Metrics, reconcile_result
from .model import Association, AssociationState, Binding, Desired, InstanceState, InvalidSpec, Target
from .policy import Denied, NeedsInstanceTags, Rule
from .policybook import NamespaceNotSeen
from .observer import Observer
from .registry import Key, Registry
from .settings import Settings
from .status import Report
from .tenancy import Admission, Tenancy
from .uninstall import release_on_uninstall
from .workqueue import Priority, WorkQueue, backoff

log = logging.getLogger(__name__)
NORMAL, WARNING = "Normal", "Warning"


class RetryLater(Exception):
    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


@dataclass
class Failure:
    kind: FaultKind
    since: float
    generation: int
    attempts: int = 0


@dataclass(frozen=True)
class Step:
    """What one reconcile concluded: the status to show, Events to record, when to look again."""

    report: Report | None
    events: tuple[Event, ...] = ()
    requeue: float | None = None


NAMESPACE_WAIT = 5.0  # seconds: a binding whose namespace the watch has not delivered yet


def denied_report(denied: Denied) -> Report:
    """A binding no policy allows: Stalled until a policy changes; what it associated earlier stays."""
    return Report(Reason.POLICY_DENIED, denied.message, stalled=True, association_known=False)


class Controller:
    def __init__(
        self, settings: Settings, gateway: Ec2Gateway, writer: KubeWriter, tenancy: Tenancy,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        metrics: Metrics | None = None,
    ):
        self.settings = settings
        self.tenancy = tenancy
        self.gateway = gateway
        self.writer = writer
        self.registry = Registry(settings.region)
        self.metrics = metrics or Metrics()
        self.queue: WorkQueue[Key] = WorkQueue(clock, self.metrics.queue)
        self.observer = Observer(gateway, clock=clock)
        self._clock = clock
        self._now = now
        self._failures: dict[Key, Failure] = {}
        self._settling: dict[Key, int] = {}
        self._crashes: dict[Key, int] = {}
        self._locks: dict[Key, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: list[asyncio.Task] = []
        self.resyncs = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"worker-{n}") for n in range(self.settings.workers)]
        self._tasks.append(asyncio.create_task(self._resync_forever(), name="resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.gateway.close()
        self.writer.close()

    # -- intake --------------------------------------------------------------------------

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Feed one watch event (None: the initial listing)."""
        binding = Binding.from_body(body)
        if event_type == "DELETED":
            for key in self._forget(binding.key):
                self.queue.add(key, priority=Priority.USER)  # the next in line takes the instance over
        elif self.registry.upsert(binding):
            self.queue.add(binding.key, priority=Priority.USER)

    def requeue_namespaces(self, namespaces: set[str]) -> None:
        """Re-evaluate the bindings of ``namespaces`` (a policy or a namespace's labels changed)."""
        for key in self.registry.keys():
            if key[0] in namespaces:
                self.queue.add(key, priority=Priority.USER)

    def forget_all(self) -> None:
        """Drop every binding (their CRD is going away): nothing is reconciled until they are back."""
        for key in self.registry.keys():
            self._forget(key)

    def _forget(self, key: Key) -> list[Key]:
        """Forget one binding; return the bindings that named the same instance."""
        binding = self.registry.get(key)
        target = self.registry.target(binding) if binding is not None else None
        contenders = self.registry.remove(key)
        if target is not None and not contenders:
            self.observer.forget(target)
        self.queue.forget(key)
        for memory in (self._failures, self._settling, self._crashes, self._locks):
            memory.pop(key, None)
        return contenders

    async def resync(self) -> None:
        """Describe every bound instance in one batched pass, then reconcile every binding
        that is not waiting out a failure backoff."""
        try:
            await self.observer.refresh(self.registry.instances_by_place())
        except AwsFault as fault:
            log.warning("resync could not describe associations, trying again next interval: %s", fault)
            return
        self.resyncs += 1
        for key in self.registry.keys():
            if key not in self._failures:
                self.queue.add(key, priority=Priority.BACKGROUND)

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            try:
                await self.resync()
            except Exception:  # a bug must not end drift detection for good
                log.exception("resync failed; trying again next interval")

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            self.metrics.reconcile_began()
            started, result = self._clock(), "error"
            try:
                delay = await self.reconcile(key)
                self._crashes.pop(key, None)
                result = reconcile_result(delay, failed=key in self._failures)
            except Exception:  # the API server or a bug: log, back off, never stop the worker
                attempt = self._crashes[key] = self._crashes.get(key, 0) + 1
                delay = backoff(attempt - 1, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
                log.exception("reconciling %s/%s failed; retrying in %.1f s", *key, delay)
            finally:
                self.queue.done(key)
                self.metrics.reconciled(result, self._clock() - started)
            if delay is not None:
                self.queue.add(key, delay)

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        """One pass over one binding; returns when to look again (None: at the next resync)."""
        binding = self.registry.get(key)
        if binding is None or binding.deleting or not binding.finalized:
            return None  # deletion is the finalizer's; nothing touches EC2 before the finalizer is on
        try:
            desired = binding.desired(self.settings.region)
        except InvalidSpec as error:
            await self._publish(binding, self.settings.region, Report(Reason.INVALID_SPEC, str(error), stalled=True))
            return None
        admission = await self._admit(binding, desired)
        if isinstance(admission, Denied):
            await self._publish(binding, desired.target.region, denied_report(admission),
                                (Event(WARNING, Reason.POLICY_DENIED, admission.message),))
            return None
        if isinstance(admission, NamespaceNotSeen):
            return NAMESPACE_WAIT  # its watch event requeues the binding; this is a safety net
        desired = admission.desired
        self.registry.place(key, desired.target.account)
        owner = self.registry.owner(desired.target)
        if owner is not None and owner.key != key:
            if admission.tags_pending:  # a policy's denial says more, and nothing of other tenants
                try:
                    denial = await self._tags_denial(binding, desired)
                except AwsFault:
                    denial = None
                if denial is not None:
                    await self._publish(binding, desired.target.region, denied_report(denial),
                                        (Event(WARNING, Reason.POLICY_DENIED, denial.message),))
                    return None
            # Another tenant's objects are none of this one's business: name only a neighbour.
            other = f"InstanceProfileBinding {owner.name}" if owner.namespace == binding.namespace else "a binding in another namespace"
            message = (
                f"instance {desired.target.instance_id} in {desired.target.region} is already bound by "
                f"{other}; this binding takes over when that one is deleted"
            )
            await self._publish(binding, desired.target.region, Report(Reason.CONFLICT, message, stalled=True),
                                (Event(WARNING, Reason.CONFLICT, message),))
            return None
        async with self._locks[key]:
            step = await self._converge(binding, desired, admission.tags_pending)
        for event in step.events:  # before the status: whoever sees the status finds its Event
            await self.writer.record(binding, event)
        if step.report is not None:
            acted = step.report.association_known and step.report.reason != Reason.POLICY_DENIED
            await self._publish(binding, desired.target.region, step.report,
                                role_arn=desired.target.account if acted else None)
        return step.requeue

    async def _admit(self, binding: Binding, desired: Desired) -> Admission:
        """The tenancy verdict; when it hinges on tags in several accounts, look them up now."""
        admission = self.tenancy.admit(binding, desired)
        if not isinstance(admission, NeedsInstanceTags):
            return admission
        try:
            tags = {account.key: (await self.observer.instance(replace(desired.target, account=account.key))).tags
                    for account in admission.accounts}
        except AwsFault as fault:
            return Denied(Rule.INSTANCE_TAGS, f"cannot read the instance's tags to check the policy: {fault}")
        return self.tenancy.admit(binding, desired, tags)

    async def _tags_denial(self, binding: Binding, desired: Desired) -> Denied | None:
        """Whether the instance's tags make the policy deny the binding (one batched Describe)."""
        tags = {desired.target.account: (await self.observer.instance(desired.target)).tags}
        verdict = self.tenancy.admit(binding, desired, tags)
        return verdict if isinstance(verdict, Denied) else None

    async def _converge(self, binding: Binding, desired: Desired, tags_pending: bool) -> Step:
        target = desired.target
        association: Association | None = None
        observed = False
        try:
            association = await self.observer.association(target)
            observed = True
            action = decide(desired, association, InstanceState.UNKNOWN)
            if isinstance(action, LookUpInstance):
                action = decide(desired, association, (await self.observer.instance(target)).state)
            if tags_pending and isinstance(action, (Associate, Replace, Disassociate)):
                denial = await self._tags_denial(binding, desired)  # before any change, never at steady state
                if denial is not None:
                    return Step(denied_report(denial), (Event(WARNING, Reason.POLICY_DENIED, denial.message),))
            if isinstance(action, WaitForInstance):
                message = f"instance {target.instance_id} is {action.state.value}; waiting until it is running or stopped"
                return self._failed(binding, FaultKind.INSTANCE_NOT_READY, message, association)
            if isinstance(action, InstanceGone):
                where = "does not exist" if action.state is InstanceState.NOT_FOUND else f"is {action.state.value}"
                message = f"instance {target.instance_id} {where} in {target.region}"
                return self._failed(binding, FaultKind.INSTANCE_NOT_FOUND, message, association)
            result = await self._apply(target, action)
        except AwsFault as fault:
            return self._failed(binding, fault.kind, str(fault), association, observed)
        self._failures.pop(binding.key, None)
        return self._succeeded(binding, desired, action, result)

    async def _apply(self, target: Target, action: Action) -> Association | None:
        if isinstance(action, Associate):
            result = await self.gateway.associate(target.region, target.instance_id, action.profile, target.account)
        elif isinstance(action, Replace):
            result = await self.gateway.replace(target.region, action.association.association_id, action.profile, target.account)
        elif isinstance(action, Disassociate):
            result = await self.gateway.disassociate(target.region, action.association.association_id, target.account)
        else:
            return None
        self.observer.invalidate(target)
        return result

    def _settle_delay(self, key: Key) -> float:
        attempt = self._settling[key] = self._settling.get(key, 0) + 1
        return backoff(attempt - 1, self.settings.settle_base_seconds, self.settings.settle_max_seconds)

    def _succeeded(self, binding: Binding, desired: Desired, action: Action, result: Association | None) -> Step:
        key, target = binding.key, desired.target
        managed = binding.status.get("associationId")
        profile = desired.profile.display
        drift = is_drift(action, status.was_ready(binding.status, binding.generation))
        if isinstance(action, InSync):
            self._settling.pop(key, None)
            a = action.association
            events = ()
            if is_adoption(action, managed):
                events = (Event(NORMAL, Reason.ADOPTED, f"adopted association {a.association_id} of {a.profile_arn}, already on {target.instance_id}"),)
            return Step(Report(Reason.ASSOCIATED, f"{target.instance_id} carries {a.profile_arn}", ready=True, association=a), events)
        if isinstance(action, Settling):
            a = action.association
            reason = Reason.ASSOCIATING if a.state is AssociationState.ASSOCIATING else Reason.DISASSOCIATING
            message = f"EC2 reports association {a.association_id} of {a.profile_arn} as {a.state.value}"
            return Step(Report(reason, message, reconciling=True, association=a), requeue=self._settle_delay(key))
        assert result is not None
        if isinstance(action, Disassociate):
            message = (
                f"instance {target.instance_id} is stopped and EC2 replaces profiles of running instances only: "
                f"disassociated {action.association.profile_arn} ({action.association.association_id}); associating {profile} next"
            )
            self._settling.pop(key, None)
            event = Event(NORMAL, Reason.DRIFT_CORRECTED if drift else Reason.DISASSOCIATED, message)
            return Step(Report(Reason.DISASSOCIATING, message, reconciling=True, association=result), (event,), requeue=0.0)
        if isinstance(action, Associate):
            done = f"associated {profile} with {target.instance_id} ({result.association_id})"
            event_reason = Reason.ASSOCIATED
            if drift:
                done = f"association {managed} was removed outside Kubernetes; {done}"
        else:
            assert isinstance(action, Replace)
            done = f"replaced {action.association.profile_arn} with {profile} on {target.instance_id} ({result.association_id})"
            event_reason = Reason.REPLACED
            if drift:
                done = f"the profile was changed outside Kubernetes; {done}"
        event = Event(NORMAL, Reason.DRIFT_CORRECTED if drift else event_reason, done)
        if result.state is AssociationState.ASSOCIATED and desired.profile.matches(result.profile_arn):
            self._settling.pop(key, None)
            return Step(Report(Reason.ASSOCIATED, f"{target.instance_id} carries {result.profile_arn}", ready=True, association=result), (event,))
        self._settling[key] = 0
        report = Report(Reason.ASSOCIATING, f"{done}; waiting for EC2 to report it associated", reconciling=True, association=result)
        return Step(report, (event,), requeue=self._settle_delay(key))

    def _failed(self, binding: Binding, kind: FaultKind, message: str, association: Association | None, observed: bool = True) -> Step:
        policy = POLICIES[kind]
        now = self._clock()
        failure = self._failures.get(binding.key)
        if failure is None or failure.kind is not kind or failure.generation != binding.generation:
            failure = self._failures[binding.key] = Failure(kind, now, binding.generation)
        failure.attempts += 1
        delay = backoff(failure.attempts - 1, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        if failure.attempts <= policy.quiet_attempts:
            log.info("%s: %s (attempt %d, retrying quietly in %.1f s)", binding.ref, message, failure.attempts, delay)
            return Step(None, requeue=delay)
        stalled, delay = stalled_and_next_try(policy, failure.since, now, delay)
        log.warning("%s: %s (attempt %d, retrying in %.1f s)", binding.ref, message, failure.attempts, delay)
        report = Report(policy.reason, message, reconciling=not stalled, stalled=stalled,
                        association=association, association_known=observed)
        return Step(report, (Event(WARNING, policy.reason, message),), requeue=delay)

    async def _publish(self, binding: Binding, region: str, report: Report, announce: tuple[Event, ...] = (),
                       role_arn: str | None = None) -> bool:
        """Write the status if it changed, after recording the ``announce`` Events; True if it did."""
        new = status.render(binding.status, binding.generation, region, report, self._now(), role_arn)
        if not status.differs(binding.status, new):
            return False
        for event in announce:
            await self.writer.record(binding, event)
        if await self.writer.patch_status(binding, new):
            self.registry.remember_status(binding.key, new)
        return True

    # -- deletion ------------------------------------------------------------------------

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
        async with self._locks[binding.key]:
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

