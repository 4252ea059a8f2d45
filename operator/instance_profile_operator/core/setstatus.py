"""Render an InstanceProfileBindingSet's status from its children's statuses.

Pure. Ready when every selected instance has a child that is Ready for its generation;
Reconciling while children are missing or still working; Stalled when some child is stuck
(Stalled: a conflict, a policy's denial, a missing profile) or the set itself cannot list its
instances for a reason only the user can change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from .api import READY, STALLED, Reason, SetReason
from .status import Report, render_conditions, timestamp

NOT_READY_SHOWN = 5


@dataclass(frozen=True)
class Child:
    """What the set reads of one child binding."""

    name: str
    generation: int
    status: Mapping[str, Any]

    def condition(self, kind: str) -> Mapping[str, Any] | None:
        for condition in self.status.get("conditions") or []:
            if condition.get("type") == kind and condition.get("observedGeneration") == self.generation:
                return condition
        return None

    @property
    def ready(self) -> bool:
        condition = self.condition(READY)
        return bool(condition and condition.get("status") == "True")

    @property
    def stalled(self) -> bool:
        condition = self.condition(STALLED)
        return bool(condition and condition.get("status") == "True")

    @property
    def reason(self) -> str:
        condition = self.condition(READY)
        return condition.get("reason", "") if condition else "Pending"

    @property
    def message(self) -> str:
        condition = self.condition(READY)
        return condition.get("message", "") if condition else "the operator has not reconciled this binding yet"


def summarize(selected: int, children: list[Child], listing: Report | None = None) -> tuple[Report, dict]:
    """The set's Report and counts. ``listing``: the fault that stopped listing the instances
    (None when the list is current)."""
    ready = sum(child.ready for child in children)
    conflicts = sum(child.reason == Reason.CONFLICT for child in children)
    denied = sum(child.reason == Reason.POLICY_DENIED for child in children)
    waiting = sorted((c for c in children if not c.ready), key=lambda c: c.name)
    counts = {
        "selected": selected, "ready": ready, "readyOfSelected": f"{ready}/{selected}", "conflicts": conflicts, "denied": denied,
        "notReady": [{"name": c.name, "reason": c.reason, "message": c.message}
                     for c in waiting[:NOT_READY_SHOWN]] or None,
    }
    if listing is not None:
        return listing, counts
    complete = len(children) == selected
    if complete and ready == selected:
        return Report(reason=SetReason.ALL_READY, message=f"{ready} of {selected} instances carry the profile",
                      ready=True), counts
    stalled = [c for c in waiting if c.stalled]
    message = f"{ready} of {selected} instances carry the profile"
    if stalled:
        message += f"; {len(stalled)} cannot progress ({stalled[0].name}: {stalled[0].reason})"
    return Report(reason=SetReason.CHILDREN_NOT_READY, message=message, reconciling=len(stalled) < len(waiting) or not complete,
                  stalled=bool(stalled) and len(stalled) == len(waiting) and complete), counts


def render(previous: Mapping[str, Any], generation: int, report: Report, counts: Mapping[str, Any],
           now: datetime) -> dict[str, Any]:
    """The set's complete new status; absent fields are None so that a merge patch removes them."""
    return {
        **counts,
        "observedGeneration": generation,
        "conditions": render_conditions(previous, generation, report, now),
        "lastSyncTime": timestamp(now),
    }
