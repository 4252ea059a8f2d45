"""The decision core: desired spec + observed EC2 state → the one next action.

Pure functions, no I/O. ``decide`` is called with ``InstanceState.UNKNOWN`` first; when the
right step depends on the instance's state it answers ``LookUpInstance``, and the caller asks
again with the state filled in. That keeps DescribeInstances off the steady-state path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .model import Association, AssociationState, Desired, InstanceState, ProfileRef


@dataclass(frozen=True)
class InSync:
    association: Association


@dataclass(frozen=True)
class Settling:
    """EC2 is moving the association between states; look again shortly."""

    association: Association


@dataclass(frozen=True)
class Associate:
    profile: ProfileRef


@dataclass(frozen=True)
class Replace:
    association: Association
    profile: ProfileRef


@dataclass(frozen=True)
class Disassociate:
    association: Association


@dataclass(frozen=True)
class LookUpInstance:
    """The next step depends on the instance's state: describe the instance, then decide again."""


@dataclass(frozen=True)
class WaitForInstance:
    state: InstanceState


@dataclass(frozen=True)
class InstanceGone:
    state: InstanceState


@dataclass(frozen=True)
class Finished:
    """Deletion: nothing (more) to do in EC2 (``custody``)."""

    why: str


Action = Union[InSync, Settling, Associate, Replace, Disassociate, LookUpInstance, WaitForInstance, InstanceGone, Finished]
MUTATIONS = (Associate, Replace, Disassociate)

_GONE = frozenset({InstanceState.NOT_FOUND, InstanceState.TERMINATED, InstanceState.SHUTTING_DOWN})
_TRANSITIONAL = frozenset({InstanceState.PENDING, InstanceState.STOPPING})


def decide(desired: Desired, association: Association | None, instance: InstanceState) -> Action:
    """The next step towards ``desired``, given the instance's current association."""
    if association is not None and association.state is AssociationState.DISASSOCIATED:
        association = None
    if association is not None:
        if association.state is AssociationState.DISASSOCIATING:
            return Settling(association)
        if desired.profile.matches(association.profile_arn):
            if association.state is AssociationState.ASSOCIATING:
                return Settling(association)
            return InSync(association)
        if association.state is AssociationState.ASSOCIATING:
            return Settling(association)  # replace only a settled association
    if instance is InstanceState.UNKNOWN:
        return LookUpInstance()
    if instance in _GONE:
        return InstanceGone(instance)
    if instance in _TRANSITIONAL:
        return WaitForInstance(instance)
    if association is None:
        return Associate(desired.profile)  # EC2 associates with running and stopped instances
    if instance is InstanceState.RUNNING:
        return Replace(association, desired.profile)
    # Replace works on running instances only: on a stopped one, disassociate, then associate.
    return Disassociate(association)


def is_drift(action: Action, was_ready: bool) -> bool:
    """A mutation on a binding whose status said Ready means EC2 was changed behind our back."""
    return was_ready and isinstance(action, MUTATIONS)


def is_adoption(action: Action, managed_id: str | None) -> bool:
    """In sync with an association this binding did not record: it adopts it."""
    return isinstance(action, InSync) and action.association.association_id != managed_id
