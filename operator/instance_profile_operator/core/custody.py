"""What deleting a binding may remove: the association it recorded making or adopting while it
was admitted, in the account and region it recorded, and nothing else.

The record is what the operator wrote to the binding's status (``associationId``, its
``instanceProfile``, ``region``, ``roleArn``; tenants cannot write the status subresource), plus
an association it made whose status write had not landed yet (``Made``). It is never the spec as
it reads at deletion: a tenant may edit the spec of a binding that waits on its finalizer. A
binding with no record (never admitted, or admitted but never associated) makes no EC2 call at
all when it is deleted. Pure: the finalizer describes and disassociates; this decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .decision import Action, Disassociate, Finished, InSync, Settling
from .model import Association, AssociationState, Target


@dataclass(frozen=True)
class Made:
    """An association this process made for a binding, and where."""

    association: Association
    target: Target
    at: float  # when (monotonic clock)
    seen: bool = False  # a describe has shown it


@dataclass(frozen=True)
class Record:
    """One association a binding may remove on deletion."""

    association_id: str
    account: str  # role ARN, "" for the operator's own credentials
    region: str
    profile_arn: str | None = None  # as recorded; None: not recorded
    instance_id: str | None = None  # known for associations made by this process (EC2's answer)


def records(status: Mapping, made: Made | None) -> tuple[Record, ...]:
    """The associations a binding with ``status`` may remove (``made``: the one this process made
    for it last and no describe has shown yet; its status write may not have landed)."""
    found: list[Record] = []
    association_id = status.get("associationId")
    if association_id and status.get("region"):
        profile = (status.get("instanceProfile") or {}).get("arn")
        instance_id = made.association.instance_id if made and made.association.association_id == association_id else None
        found.append(Record(association_id, status.get("roleArn") or "", status["region"], profile, instance_id))
    if made is not None and made.association.association_id != association_id:
        a = made.association
        found.append(Record(a.association_id, made.target.account, made.target.region, a.profile_arn, a.instance_id))
    return tuple(found)


def removal(record: Record, observed: Association | None, current: Association | None = None) -> Disassociate | Settling | Finished:
    """What to do about ``record`` given the association EC2 shows under its ID (``observed``) and,
    when that is not visible, the instance's current association (``current``; made associations
    only). ``Settling``: wait and look again."""
    if observed is None:
        if record.instance_id is None:
            return Finished(f"association {record.association_id} is gone")
        if current is not None and current.association_id != record.association_id:
            return Finished(f"association {record.association_id} is gone: the instance carries {current.association_id}")
        # Made here and not visible yet (EC2 is eventually consistent): act on what EC2 answered.
        return Disassociate(Association(record.association_id, record.instance_id, record.profile_arn or "", "",
                                        AssociationState.ASSOCIATED))
    if observed.state is AssociationState.ASSOCIATING:
        return Settling(observed)  # EC2 refuses to disassociate it until it settles
    if observed.state is not AssociationState.ASSOCIATED:
        return Finished(f"association {record.association_id} is {observed.state.value}")
    if record.profile_arn and observed.profile_arn != record.profile_arn:
        return Finished(f"association {record.association_id} now carries {observed.profile_arn}, set outside this binding")
    return Disassociate(observed)


def keeps(status: Mapping, made: Made | None, target: Target, action: Action) -> bool:
    """Whether ``action`` only keeps (or waits on) the association this binding recorded or made
    at ``target``: the one step that needs no fresh look at the policy's instance tags."""
    if not isinstance(action, (InSync, Settling)):
        return False
    association_id = action.association.association_id
    if made is not None and made.target == target and made.association.association_id == association_id:
        return True
    return (status.get("associationId") == association_id and status.get("region") == target.region
            and (status.get("roleArn") or "") == target.account)
