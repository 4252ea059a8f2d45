"""The reconcile loop: watch events in, one decided EC2 step and a status write out.

Workers take binding keys from a work queue. Each reconcile asks the ``gate`` whether and where
the binding may act and whether it owns the instance, observes (batched), asks the decision core
for the one next action, performs it, and publishes what ``outcomes`` makes of it: status,
Events, and when to look again (soon while EC2 settles, after a capped, jittered backoff when
something failed, or at the next resync when in sync). The finalizer is ``lifecycle``'s to add
before anything touches EC2 and to run; deletion is ``finalizer``'s, serialized with the
reconcile of the same binding, and decided by what it recorded (``custody``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from . import outcomes
from ..aws.ec2 import Ec2Gateway
from ..aws.observer import Observer
from ..aws.ratelimit import on_behalf_of
from ..core import custody, status
from ..core.api import Reason
from ..core.decision import MUTATIONS, Action, Associate, Disassociate, InstanceGone, LookUpInstance, Replace, WaitForInstance, decide
from ..core.faults import AwsFault, FaultKind
from ..core.model import Association, Binding, Desired, InstanceState, InvalidSpec, Target
from ..core.policy import Denied
from ..core.policybook import NamespaceNotSeen
from ..core.status import Report
from ..core.tenancy import Admitted, Tenancy
from ..kube.writer import Event, KubeWriter
from ..runtime import memory
from ..runtime.metrics import Metrics, reconcile_result
from ..runtime.workqueue import KeyLocks, Priority, WorkQueue, backoff
from ..settings import Settings
from .bulk import BulkDescriber
from .finalizer import Finalizer
from .gate import Gate
from .intake import Intake
from .lifecycle import Lifecycle
from .outcomes import Outcomes, Step
from .registry import Key, Registry

log = logging.getLogger(__name__)
WARNING = "Warning"


NAMESPACE_WAIT = 5.0  # seconds: a binding whose namespace the watch has not delivered yet


class Controller:
    def __init__(
        self, settings: Settings, gateway: Ec2Gateway, writer: KubeWriter, tenancy: Tenancy,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        metrics: Metrics | None = None, registry: Registry | None = None,
    ):
        self.settings = settings
        self.tenancy = tenancy
        self.gateway = gateway
        self.writer = writer
        self.registry = registry or Registry(settings.region)  # a standby's, when it takes over
        self.metrics = metrics or Metrics()
        # Namespaces take turns, and none holds every worker: another's change never waits for a worker.
        self.queue: WorkQueue[Key] = WorkQueue(clock, self.metrics.queue, tenant_of=lambda key: key[0],
                                               tenant_limit=max(1, settings.workers - 1))
        self.observer = Observer(gateway, ttl=settings.resync_seconds, clock=clock, recovered=lambda place: self.bulk.recovered(place))
        self._clock = clock
        self._now = now
        self._locks: KeyLocks[Key] = KeyLocks()  # a reconcile and the finalizer never overlap
        self.outcomes = Outcomes(settings, clock)
        self.gate = Gate(tenancy, self.observer, self.registry)
        self.finalizer = Finalizer(settings, self.observer, gateway, writer, self._locks, self.outcomes, self._publish)
        self.bulk = BulkDescriber(self.registry, self.observer, self.queue, self.outcomes, self.metrics)
        self.intake = Intake(self.registry, tenancy, self.observer, self.bulk, self.queue)
        self.lifecycle = Lifecycle(settings, writer, self.finalizer, self.registry, self.intake)
        self._crashes: dict[Key, int] = {}
        self._tasks: list[asyncio.Task] = []
        self.resyncs = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"worker-{n}") for n in range(self.settings.workers)]
        self._tasks.append(asyncio.create_task(self._resync_forever(), name="resync"))

    def take_over(self) -> None:
        """Reconcile at once what this replica knew on standby: one batched describe of every known
        binding's instance, those that need work queued first; a binding created or deleted while
        no replica led gets its finalizer added or handled."""
        keys = self.registry.keys()
        for key in keys:
            self._follow_lifecycle(self.registry.get(key))
        self.intake.known([key for key in keys if not self.intake.holds(key)])

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.lifecycle.stop()
        self.intake.stop()
        self.bulk.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.gateway.close()
        self.writer.close()

    # -- intake --------------------------------------------------------------------------

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Feed one event of the bindings' watch (None: listed)."""
        binding = Binding.from_body(body)
        if event_type == "DELETED":
            self.lifecycle.forget(binding.key)
            for key in self._forget(binding.key):
                self.queue.add(key, priority=Priority.USER)  # the next in line takes the instance over
            return
        new = self.registry.get(binding.key) is None
        changed = self.registry.upsert(binding)
        if self._follow_lifecycle(binding, body["metadata"]) or not changed or self.intake.holds(binding.key):
            return  # the finalizer's to add or run, its status alone changed, or intake queues it once looked up
        if event_type is None:  # listed (start-up): described in bulk first, not 16 at a time by the workers
            self.intake.listed(binding.key)
        elif new:  # one of a burst, maybe: looked up with the others first
            self.intake.added(binding.key)
        else:
            self.queue.add(binding.key, priority=Priority.USER)

    def _follow_lifecycle(self, binding: Binding, metadata: Mapping[str, Any] | None = None) -> bool:
        """Add the finalizer, or handle the deletion, if the binding needs it; whether it did.
        ``metadata``, as the watch event showed it, spares adding the finalizer a read."""
        if binding.deleting:
            if binding.finalized:
                self.lifecycle.delete(binding.key)
            return True
        if not binding.finalized:
            seen = (metadata.get("resourceVersion", ""), tuple(metadata.get("finalizers") or ())) if metadata else None
            self.lifecycle.add(binding.key, seen)
            return True
        return False

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
        self.outcomes.forget(key)
        self._crashes.pop(key, None)
        return contenders

    async def resync(self) -> None:
        """Describe every bound instance in one batched pass per account and region, then
        reconcile every binding that is not waiting out a failure backoff."""
        self.gateway.retain(self.registry.instances_by_place())  # clients and rate-limit buckets of places nobody names go
        await self.bulk.describe_then_queue(self.registry.keys(), Priority.BACKGROUND)
        self.resyncs += 1

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            memory.release_free()  # what the last interval's work freed
            self.bulk.in_background(self.resync(), "resync")

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            self.metrics.reconcile_began()
            started, result = self._clock(), "error"
            try:
                with on_behalf_of(key[0]):  # its EC2 calls take their namespace's turn
                    delay = await self.reconcile(key)
                self._crashes.pop(key, None)
                result = reconcile_result(delay, failed=self.outcomes.erring(key))
            except Exception as error:  # the API server or a bug: say so, back off, never stop the worker
                attempt = self._crashes[key] = self._crashes.get(key, 0) + 1
                delay = backoff(attempt - 1, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
                log.error("reconciling %s/%s failed (attempt %d); retrying in %.1f s", *key, attempt, delay,
                          exc_info=attempt == 1)  # the traceback once, not at every retry
                await self._report_internal_error(key, error)
            finally:
                self.queue.done(key)
                self.metrics.reconciled(result, self._clock() - started)
            if delay is not None:  # a settle check ends a change made: it goes first
                self.queue.add(key, delay, Priority.FOLLOW_UP if self.outcomes.settling(key) else Priority.USER)

    async def _report_internal_error(self, key: Key, error: Exception) -> None:
        """An exception nothing classified: the binding shows it (Ready=False, InternalError) rather
        than keeping a status that no longer says what happens."""
        binding = self.registry.get(key)
        if binding is None or binding.deleting:
            return
        said = " ".join(str(error).split())[:300]  # an API error's text can run to its response headers
        message = f"{type(error).__name__}: {said}; retrying with backoff (the operator's log has the traceback)"
        try:
            await self._publish(binding, binding.spec.get("region") or self.settings.region,
                                Report(Reason.INTERNAL_ERROR, message, reconciling=True, association_known=False),
                                (Event(WARNING, Reason.INTERNAL_ERROR, message),))
        except Exception as failure:  # the API server itself, most likely
            log.warning("could not report it on %s/%s either: %s: %s", *key, type(failure).__name__, failure)

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        """One pass over one binding; returns when to look again (None: at the next resync)."""
        async with self._locks.hold(key):  # the finalizer waits, and finds what this pass made and wrote
            binding = self.registry.get(key)  # read under the lock: as the finalizer last left it
            if binding is None or binding.deleting or not binding.finalized:
                return None  # deletion is the finalizer's; nothing touches EC2 before the finalizer is on
            try:
                desired = binding.desired(self.settings.region)
            except InvalidSpec as error:
                await self._publish(binding, self.settings.region,
                                    Report(Reason.INVALID_SPEC, str(error), stalled=True, association_known=False))
                return None
            try:
                step = await self._step(binding, desired)
            except AwsFault as fault:  # reading tags for a policy check: a fault, retried, never a denial
                step = self.outcomes.failed(binding, fault.kind, str(fault))
            if step is None:
                return NAMESPACE_WAIT  # its watch event requeues the binding; this is a safety net
            for event in () if step.announce else step.events:  # before the status: whoever sees it finds its Event
                await self.writer.record(binding, event)
            if step.report is not None:
                target = self.registry.target(binding)
                await self._publish(binding, target.region if target else desired.target.region, step.report,
                                    step.events if step.announce else (), target.account if target else "")
            return step.requeue

    async def _step(self, binding: Binding, desired: Desired) -> Step | None:
        """What this pass concludes (None: the binding's namespace is not known yet)."""
        admission = await self.gate.admit(binding, desired)
        if isinstance(admission, Denied):
            self.registry.deny(binding.key)
            return outcomes.denied(admission)
        if isinstance(admission, NamespaceNotSeen):
            return None
        target = admission.desired.target
        self.registry.place(binding.key, target.account)
        owner = await self.gate.owner(binding, target)
        if owner.key == binding.key:
            return await self._converge(binding, admission)
        if admission.tags_pending:  # a policy's denial says more, and nothing of other tenants
            denial, _ = await self.gate.check_tags(binding, admission)
            if denial is not None:
                return outcomes.denied(denial)
        # Another tenant's objects are none of this one's business: name only a neighbour.
        other = f"InstanceProfileBinding {owner.name}" if owner.namespace == binding.namespace else "a binding in another namespace"
        message = (f"instance {target.instance_id} in {target.region} is already bound by {other}; "
                   "this binding takes over when that one is deleted")
        return Step(Report(Reason.CONFLICT, message, stalled=True), (Event(WARNING, Reason.CONFLICT, message),), announce=True)

    async def _converge(self, binding: Binding, admission: Admitted) -> Step:
        desired = admission.desired
        target = desired.target
        try:
            association = self.outcomes.observed(binding, await self.observer.association(target))
            action = decide(desired, association, InstanceState.UNKNOWN)
            instance = None
            if admission.tags_pending and not custody.keeps(binding.status, self.outcomes.made(binding.key), target, action):
                # Adoption is admission: the tags gate adopting, waiting on or telling of the instance
                # as they gate changing it; only keeping what this binding recorded needs no look.
                denial, instance = await self.gate.check_tags(binding, admission)
                if denial is not None:
                    return outcomes.denied(denial)
            if isinstance(action, LookUpInstance):
                action = decide(desired, association, (instance or await self.observer.instance(target)).state)
            if isinstance(action, WaitForInstance):
                message = f"instance {target.instance_id} is {action.state.value}; waiting until it is running or stopped"
                return self.outcomes.failed(binding, FaultKind.INSTANCE_NOT_READY, message)
            if isinstance(action, InstanceGone):
                where = "does not exist" if action.state is InstanceState.NOT_FOUND else f"is {action.state.value}"
                message = f"instance {target.instance_id} {where} in {target.region}"
                return self.outcomes.failed(binding, FaultKind.INSTANCE_NOT_FOUND, message)
            if isinstance(action, MUTATIONS) and self._moved_on(binding):
                return Step(None)  # deleted or changed meanwhile: the finalizer or the next pass decides
            result = await self._apply(target, action)
        except AwsFault as fault:
            return self.outcomes.failed(binding, fault.kind, str(fault))
        return self.outcomes.succeeded(binding, desired, action, result)

    def _moved_on(self, binding: Binding) -> bool:
        """Whether the binding was deleted or its spec changed since this pass read it."""
        current = self.registry.get(binding.key)
        return current is None or current.deleting or current.generation != binding.generation

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

    async def _publish(self, binding: Binding, region: str, report: Report, announce: tuple[Event, ...] = (),
                       role_arn: str = "") -> bool:
        """Write the status if it changed, after recording the ``announce`` Events; True if it did."""
        new = status.render(binding.status, binding.generation, region, report, self._now(), role_arn)
        if not status.differs(binding.status, new):
            return False
        for event in announce:
            await self.writer.record(binding, event)
        if await self.writer.patch_status(binding, new):
            self.registry.remember_status(binding.key, new)
        return True

