"""Render a binding's status from what a reconcile found, following the API conventions.

``Ready`` is always present. ``Reconciling`` and ``Stalled`` are kstatus' abnormal-true
conditions: present only while true. A condition keeps its ``lastTransitionTime`` unless its
status flips.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from .api import READY, RECONCILING, STALLED
from .model import Association


@dataclass(frozen=True)
class Report:
    """The outcome of one reconcile, as users should read it."""

    reason: str
    message: str
    ready: bool = False
    reconciling: bool = False
    stalled: bool = False
    association: Association | None = None
    association_known: bool = True  # False: EC2 could not be asked; keep what status said


def timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_conditions(previous: Mapping[str, Any], generation: int, report: Report,
                      now: datetime) -> list[dict[str, Any]]:
    """Ready, and Reconciling and Stalled while true, for ``report``."""
    wanted = [(READY, report.ready)]
    if report.reconciling:
        wanted.append((RECONCILING, True))
    if report.stalled:
        wanted.append((STALLED, True))
    old = {c.get("type"): c for c in previous.get("conditions") or []}
    conditions = []
    for kind, status in wanted:
        value = "True" if status else "False"
        before = old.get(kind)
        since = before["lastTransitionTime"] if before and before.get("status") == value else timestamp(now)
        conditions.append({
            "type": kind, "status": value, "reason": report.reason, "message": report.message,
            "observedGeneration": generation, "lastTransitionTime": since,
        })
    return conditions


def render(previous: Mapping[str, Any], generation: int, region: str, report: Report, now: datetime,
           role_arn: str = "") -> dict[str, Any]:
    """The complete new status. Absent fields are None so that a merge patch removes them.
    ``role_arn``: the role the binding acts through ("" for the operator's own credentials).

    The association fields with ``region`` and ``roleArn`` are the binding's record (what its
    deletion may remove, ``custody``): written together when ``report.association_known``, else
    all kept as they were (the region follows the spec while nothing is recorded)."""
    association = report.association
    if report.association_known:
        observed = {
            "associationId": association.association_id if association else None,
            "state": association.state.value if association else None,
            "instanceProfile": (
                {"arn": association.profile_arn, "name": association.profile_arn.rsplit("/", 1)[-1],
                 "id": association.profile_id} if association else None
            ),
            "associatedAt": timestamp(association.timestamp) if association and association.timestamp else None,
            "roleArn": role_arn or None,
        }
    else:
        observed = {key: previous.get(key) for key in ("associationId", "state", "instanceProfile", "associatedAt", "roleArn")}
        if previous.get("associationId"):
            region = previous.get("region") or region
    return {
        **observed,
        "account": account_of(observed["roleArn"] or (observed["instanceProfile"] or {}).get("arn")),
        "region": region,
        "observedGeneration": generation,
        "conditions": render_conditions(previous, generation, report, now),
        "lastSyncTime": timestamp(now),
    }


def account_of(arn: str | None) -> str | None:
    """The account ID an ARN names (``arn:partition:service:region:account:resource``)."""
    parts = (arn or "").split(":")
    return parts[4] or None if len(parts) > 5 else None


def differs(previous: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` would change anything but ``lastSyncTime``."""
    for key, value in new.items():
        if key == "lastSyncTime":
            continue
        if previous.get(key) != value:
            return True
    return False


def was_ready(status: Mapping[str, Any], generation: int) -> bool:
    """Whether the status claimed Ready for this generation."""
    return any(
        c.get("type") == READY and c.get("status") == "True" and c.get("observedGeneration") == generation
        for c in status.get("conditions") or []
    )


def still_true(status: Mapping[str, Any], generation: int, observed_id: str | None) -> bool:
    """Whether the status claimed Ready for this generation with the association EC2 still shows:
    a re-check that will most likely confirm it, which the bindings that need work go before."""
    return observed_id is not None and status.get("associationId") == observed_id and was_ready(status, generation)
