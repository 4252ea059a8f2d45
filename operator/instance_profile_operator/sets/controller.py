"""The set controller: ties the membership core to EC2's listing and the children's writes.

Each set is reconciled from a work queue: when it changes, when one of its children changes
(coalesced), and every resync period. EC2 is listed only when what decides membership changed
(selector, region, account: not the profile) or the resync period has passed since the last listing began; a child's change re-plans against that
listing (a child edited or deleted by hand is put back at once) and refreshes the status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from ..aws.ec2 import Ec2Gateway
from ..aws.ratelimit import on_behalf_of
from ..core import setstatus
from ..core.api import SET_KIND, Reason, SetReason
from ..core.faults import POLICIES, AwsFault
from ..core.membership import ChildSpec, child_body, plan
from ..core.model import OWN_ACCOUNT, Account, Binding, InvalidSpec, ProfileRef
from ..core.policy import Denied, NeedsInstanceTags, Rule
from ..core.policybook import NamespaceNotSeen
from ..core.status import Report, differs
from ..core.tenancy import Tenancy
from ..kube.writer import Event, KubeWriter
from ..runtime.workqueue import WorkQueue, backoff
from ..settings import Settings
from .index import SetIndex, SetKey

log = logging.getLogger(__name__)
NORMAL, WARNING = "Normal", "Warning"
CHILD_COALESCE_SECONDS = 1.0  # a burst of child changes makes one status write
EXPECTATION_SECONDS = 60.0  # a child created but not yet seen in the watch is not created again within this
LISTED_IDS_SHOWN = 5


@dataclass(frozen=True)
class Listing:
    selector: tuple  # what decides membership: tags, region, account (a profile change lists nothing again)
    instance_ids: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class SetSpec:
    tags: Mapping[str, str]
    declared: ChildSpec
    region: str

    @property
    def profile(self) -> ProfileRef:
        return ProfileRef(**dict(self.declared.profile))


def parse_spec(spec: Mapping[str, Any], default_region: str) -> SetSpec:
    tags = dict((spec.get("instanceSelector") or {}).get("tags") or {})
    profile = {k: v for k, v in (spec.get("iamInstanceProfile") or {}).items() if k in ("arn", "name")}
    if not tags:
        raise InvalidSpec("spec.instanceSelector.tags needs at least one tag")
    ProfileRef(**profile)  # exactly one of arn or name
    region = spec.get("region")
    declared = ChildSpec(tuple(profile.items()), region, spec.get("deletionPolicy", "Delete"))
    return SetSpec(tags, declared, region or default_region)


class SetController:
    def __init__(self, settings: Settings, gateway: Ec2Gateway, writer: KubeWriter, tenancy: Tenancy,
                 clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._gateway = gateway
        self._writer = writer
        self._tenancy = tenancy
        self._clock = clock
        self.index = SetIndex()
        self._queue: WorkQueue[SetKey] = WorkQueue(clock=clock, tenant_of=lambda key: key[0])
        self._listings: dict[SetKey, Listing] = {}
        self._failures: dict[SetKey, int] = {}
        self._expected: dict[SetKey, dict[str, float]] = {}  # children created, not yet watched: instance -> when
        self._workers: list[asyncio.Task] = []

    async def start(self, workers: int = 4) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"set-worker-{i}") for i in range(workers)]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def on_set(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self._queue.add(self.index.on_set(event_type, body))

    def on_child(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = self.index.on_child(event_type, body)
        if key is not None:
            self._queue.add(key, delay=CHILD_COALESCE_SECONDS)

    def forget_all(self) -> None:
        """Drop every set (their CRD is going away): no set makes a child until they are back."""
        self.index.sets.clear()

    def requeue_namespaces(self, namespaces: set[str]) -> None:
        for key in list(self.index.sets):
            if key[0] in namespaces:
                self._queue.add(key)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            try:
                delay = await self.reconcile(key)
            except Exception:  # noqa: BLE001 - one set's failure never stops the others
                log.exception("set %s/%s: reconcile failed", *key)
                attempts = self._failures[key] = self._failures.get(key, 0) + 1
                delay = backoff(attempts - 1, self._settings.retry_base_seconds, self._settings.retry_max_seconds)
            finally:
                self._queue.done(key)
            if delay is not None:
                self._queue.add(key, delay=delay)

    async def reconcile(self, key: SetKey) -> float | None:
        """One pass over a set; the delay until the next one (None: the set is gone)."""
        body = self.index.sets.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._listings.pop(key, None)
            self._failures.pop(key, None)
            self._expected.pop(key, None)
            return None
        meta = body["metadata"]
        owner = Binding.from_body(body)
        resync = self._settings.resync_seconds
        try:
            spec = parse_spec(body.get("spec") or {}, self._settings.region)
        except InvalidSpec as error:
            await self._show(owner, body, Report(Reason.INVALID_SPEC, str(error), stalled=True), _counts(0), None)
            return None
        account = self._account(key[0], spec)
        if isinstance(account, NamespaceNotSeen):
            return 1.0
        if isinstance(account, Denied):
            report = Report(Reason.POLICY_DENIED, account.message, stalled=True)
            await self._show(owner, body, report, _counts(0), spec.region, Event(WARNING, Reason.POLICY_DENIED, account.message))
            return resync
        listing = self._listings.get(key)
        selector = (tuple(sorted(spec.tags.items())), spec.region, account.key)
        if listing is None or listing.selector != selector or self._clock() - listing.at >= resync * 0.95:
            started = self._clock()  # the next listing is due a resync interval after this one began
            try:
                with on_behalf_of(key[0]):
                    found = await self._gateway.instances_tagged(spec.region, spec.tags, account.key)
            except AwsFault as fault:
                policy = POLICIES[fault.kind]
                attempts = self._failures[key] = self._failures.get(key, 0) + 1
                stalled = policy.stalled_after == 0.0
                report = Report(policy.reason, f"cannot list the instances: {fault}", reconciling=not stalled,
                                stalled=stalled)
                await self._show(owner, body, report, _counts(len(listing.instance_ids) if listing else 0), spec.region,
                                 Event(WARNING, policy.reason, report.message))
                return min(backoff(attempts - 1, self._settings.retry_base_seconds, self._settings.retry_max_seconds), resync)
            listing = self._listings[key] = Listing(selector, tuple(found), started)
            self._failures.pop(key, None)
        await self._converge(key, meta, owner, spec, listing)
        children = self._children(key, meta["uid"], listing.instance_ids)
        report, counts = setstatus.summarize(len(listing.instance_ids), children)
        await self._show(owner, body, report, counts, spec.region)
        return max(0.0, listing.at + resync - self._clock())

    def _account(self, namespace: str, spec: SetSpec) -> Account | Denied | NamespaceNotSeen:
        """The account the set lists its instances in, as its namespace's policies decide."""
        if not self._tenancy.enforcing:
            return OWN_ACCOUNT
        verdict = self._tenancy.book.evaluate(namespace, spec.profile, spec.region)
        if isinstance(verdict, NeedsInstanceTags):  # the children are judged instance by instance
            if len(verdict.accounts) == 1:
                return verdict.accounts[0]
            return Denied(Rule.AMBIGUOUS_ACCOUNT, "the policies that allow this profile act in several accounts; "
                          "make them agree on one account for this namespace")
        if isinstance(verdict, Denied) or isinstance(verdict, NamespaceNotSeen):
            return verdict
        return verdict.account

    async def _converge(self, key: SetKey, meta: Mapping[str, Any], owner: Binding, spec: SetSpec,
                        listing: Listing) -> None:
        records = self.index.children(key, meta["uid"])
        by_instance = {c.spec.get("instanceId", ""): c for c in records}
        steps = plan(listing.instance_ids, {i: c.spec for i, c in by_instance.items()}, spec.declared)
        namespace = key[0]
        released = [i for i in steps.delete if not by_instance[i].deleting]
        create = self._unexpected(key, steps.create, by_instance)
        # at once: the writer's thread pool bounds them, and children wait for their EC2 tokens anyway
        try:
            await asyncio.gather(
                *(self._writer.create_binding(child_body(namespace, key[1], meta["uid"], instance_id, spec.declared))
                  for instance_id in create),
                *(self._writer.patch_binding_spec(namespace, by_instance[instance_id].name, child_spec)
                  for instance_id, child_spec in steps.update if not by_instance[instance_id].deleting),
                *(self._writer.delete_binding(namespace, by_instance[instance_id].name, by_instance[instance_id].uid)
                  for instance_id in released),
            )
        except Exception:
            self._expected.pop(key, None)  # the next pass creates whatever did not come
            raise
        if create:
            await self._writer.record(owner, Event(NORMAL, SetReason.INSTANCES_SELECTED, _instances(
                "began to match the selector", create)), kind=SET_KIND)
        if released:
            await self._writer.record(owner, Event(NORMAL, SetReason.INSTANCES_RELEASED, _instances(
                f"no longer match or are gone; their bindings are deleted (deletionPolicy {spec.declared.deletion_policy})",
                released)), kind=SET_KIND)
        if steps.update:
            await self._writer.record(owner, Event(NORMAL, SetReason.CHILDREN_UPDATED,
                                                   f"{len(steps.update)} bindings set to the set's spec"), kind=SET_KIND)

    def _unexpected(self, key: SetKey, wanted: tuple[str, ...] | list[str], seen: Mapping[str, Any]) -> list[str]:
        """The instances of ``wanted`` whose child is not already on its way (created by an earlier
        pass, its watch event not yet here: controller-runtime's expectations), now expected."""
        now = self._clock()
        expected = {i: at for i, at in self._expected.get(key, {}).items() if i not in seen and now - at < EXPECTATION_SECONDS}
        create = [i for i in wanted if i not in expected]
        expected.update((i, now) for i in create)
        self._expected[key] = expected
        return create

    def _children(self, key: SetKey, uid: str, selected: tuple[str, ...]) -> list[setstatus.Child]:
        wanted = set(selected)
        return [setstatus.Child(c.name, c.generation, c.status) for c in self.index.children(key, uid)
                if c.spec.get("instanceId") in wanted and not c.deleting]

    async def _show(self, owner: Binding, body: Mapping[str, Any], report: Report, counts: Mapping[str, Any],
                    region: str | None, event: Event | None = None) -> None:
        previous = body.get("status") or {}
        new = setstatus.render(previous, owner.generation, report, {**counts, "region": region},
                               datetime.now(timezone.utc))
        if differs(previous, new):
            if await self._writer.patch_set_status(owner.namespace, owner.name, new) and event is not None:
                await self._writer.record(owner, event, kind=SET_KIND)


def _counts(selected: int) -> dict[str, Any]:
    """The counts of a set whose children were not looked at (its spec or listing failed)."""
    return setstatus.summarize(selected, [])[1]


def _instances(what: str, instance_ids: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(instance_ids[:LISTED_IDS_SHOWN])
    more = f" and {len(instance_ids) - LISTED_IDS_SHOWN} more" if len(instance_ids) > LISTED_IDS_SHOWN else ""
    return f"{len(instance_ids)} instances {what}: {shown}{more}"
