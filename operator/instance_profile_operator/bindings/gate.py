"""The tenant boundary at reconcile time: whether a binding may act, on which instance, and
whether it owns that instance among the bindings that name it.

``Tenancy`` decides from policies and namespaces; this room looks up the instance tags a
verdict hangs on (through the batched ``Observer``), and lets only admitted bindings own an
instance: a denied binding never puts an admitted one in ``Conflict``. A fault while reading
tags is raised as such (retried with backoff), never taken as a denial; an instance that does
not exist has no tags, so it reads as one that lacks them.
"""

from __future__ import annotations

from dataclasses import replace

from ..aws.observer import Observer
from ..core.faults import AwsFault, FaultKind
from ..core.model import MISSING_INSTANCE, Binding, Desired, Instance, InvalidSpec, Target
from ..core.policy import Denied, NeedsInstanceTags
from ..core.tenancy import Admission, Admitted, Tenancy
from .registry import Registry


class Gate:
    def __init__(self, tenancy: Tenancy, observer: Observer, registry: Registry):
        self.tenancy = tenancy
        self._observer = observer
        self._registry = registry

    async def instance(self, target: Target) -> Instance:
        """The instance's state and tags, for a policy check: a fault says it is one."""
        try:
            return await self._observer.instance(target)
        except AwsFault as fault:
            if fault.kind is FaultKind.INSTANCE_NOT_FOUND:
                return MISSING_INSTANCE
            raise AwsFault(fault.kind, fault.code, f"cannot read the instance's tags to check the policy: {fault.message}") from None

    async def admit(self, binding: Binding, desired: Desired) -> Admission:
        """The tenancy verdict; when it hinges on tags in several accounts, they are looked up now."""
        admission = self.tenancy.admit(binding, desired)
        if not isinstance(admission, NeedsInstanceTags):
            return admission
        tags = {account.key: (await self.instance(replace(desired.target, account=account.key))).tags
                for account in admission.accounts}
        return self.tenancy.admit(binding, desired, tags)

    async def check_tags(self, binding: Binding, admitted: Admitted) -> tuple[Denied | None, Instance]:
        """The policy's verdict on the instance's tags (``admitted.tags_pending``), with the instance."""
        instance = await self.instance(admitted.desired.target)
        verdict = self.tenancy.admit(binding, admitted.desired, {admitted.desired.target.account: instance.tags})
        return (verdict if isinstance(verdict, Denied) else None), instance

    async def owner(self, binding: Binding, target: Target) -> Binding:
        """The first by precedence of the admitted bindings that name ``target`` (``binding`` is one)."""
        rivals = self._registry.rivals(binding.key)
        if not rivals:
            return binding
        claims = {rival.key: self._claim(rival, target) for rival in rivals}
        if None in claims.values():  # some hang on the instance's tags: the same instance for all
            tags = (await self.instance(target)).tags
            claims = {rival.key: self._claim(rival, target, tags) for rival in rivals}
        owner = self._registry.owner(target, lambda b: b.key == binding.key or bool(claims.get(b.key)))
        return owner or binding

    def _claim(self, rival: Binding, target: Target, tags: dict | None = None) -> bool | None:
        try:
            desired = rival.desired(self._registry.default_region)
        except InvalidSpec:
            return False
        return self.tenancy.claims(rival, desired, target, tags)
