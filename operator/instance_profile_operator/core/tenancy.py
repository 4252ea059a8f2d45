"""Tenancy at reconcile time: may this binding act, and in which account?

A thin room between the controller and the pure ``PolicyBook``: under ``Disabled`` every
binding is allowed in the operator's own account; under ``Enforce`` the book decides. Instance
tags are the one input that costs an EC2 call, so ``admit`` first answers without them; the
controller looks them up before anything but keeping the association the binding recorded:
before a mutation, an adoption, or telling anything of the instance (and at once when the
candidate accounts are several: it cannot even observe the instance before it knows where).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Union

from .model import OWN_ACCOUNT, Account, Binding, Desired, Target
from .policy import Allowed, Denied, NeedsInstanceTags
from .policybook import NamespaceNotSeen, PolicyBook


@dataclass(frozen=True)
class Admitted:
    """The binding may act in ``account``; ``tags_pending``: only if the instance's tags there
    satisfy the policy, to be checked before any mutating call."""

    desired: Desired
    tags_pending: bool = False


Admission = Union[Admitted, Denied, NeedsInstanceTags, NamespaceNotSeen]


class Tenancy:
    def __init__(self, enforcing: bool, book: PolicyBook | None = None):
        self.enforcing = enforcing
        self.book = book or PolicyBook()

    def admit(self, binding: Binding, desired: Desired, tags: Mapping[str, Mapping[str, str]] | None = None) -> Admission:
        """Where ``desired`` may act, with its target placed in that account."""
        if not self.enforcing:
            return Admitted(desired)
        verdict = self.book.evaluate(binding.namespace, desired.profile, desired.target.region, tags)
        if isinstance(verdict, Allowed):
            return Admitted(_placed(desired, verdict.account))
        if isinstance(verdict, NeedsInstanceTags) and len(verdict.accounts) == 1:
            return Admitted(_placed(desired, verdict.accounts[0]), tags_pending=True)
        return verdict

    def claims(self, binding: Binding, desired: Desired, target: Target, tags: Mapping[str, str] | None = None) -> bool | None:
        """Whether ``binding`` (wanting ``desired``) is admitted to act on ``target``, and so
        contends for it; None: it hangs on the instance's ``tags`` there (look them up, ask again)."""
        admission = self.admit(binding, desired, None if tags is None else {target.account: tags})
        if not isinstance(admission, Admitted) or admission.desired.target != target:
            return False
        return None if admission.tags_pending else True

    def account_of(self, role_arn: str) -> Account:
        """The account a role ARN stands for, with the external ID its policy gives."""
        if not role_arn:
            return OWN_ACCOUNT
        named = sorted((p.account for p in self.book.policies if p.account.role_arn == role_arn),
                       key=lambda account: account.external_id)
        return named[0] if named else Account(role_arn)


def _placed(desired: Desired, account: Account) -> Desired:
    return replace(desired, target=replace(desired.target, account=account.key))
