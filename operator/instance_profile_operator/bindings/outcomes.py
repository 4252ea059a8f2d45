"""What a reconcile's outcome means for users: the status report, the Events, and when to look
again. It remembers, per binding, how long EC2 has been settling and how long a fault has
persisted, so that retries back off and ``Stalled`` turns true when its stated time has passed."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Callable

from ..core import status
from ..core.api import Reason
from ..core.custody import Made
from ..core.decision import Action, Associate, Disassociate, InSync, Replace, Settling, is_adoption, is_drift
from ..core.faults import POLICIES, USER_FAULTS, FaultKind, stalled_and_next_try
from ..core.model import Association, AssociationState, Binding, Desired
from ..core.policy import Denied
from ..core.status import Report
from ..kube.writer import Event
from ..runtime.workqueue import backoff, on_grid
from ..settings import Settings
from .registry import Key

log = logging.getLogger(__name__)
NORMAL, WARNING = "Normal", "Warning"
SETTLE_GRID = 0.5  # seconds: settle checks fall on this grid, so those of a burst share a Describe
VISIBILITY_GRACE = 10.0  # seconds: EC2's describes may miss an association made this recently


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
    announce: bool = False  # the events go with a change of status only (a verdict, not an attempt)


def denied(verdict: Denied) -> Step:
    """A binding no policy allows: Stalled until a policy changes; what it associated earlier stays."""
    report = Report(Reason.POLICY_DENIED, verdict.message, stalled=True, association_known=False)
    return Step(report, (Event(WARNING, Reason.POLICY_DENIED, verdict.message),), announce=True)


class Outcomes:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._clock = clock
        self._failures: dict[Key, Failure] = {}
        self._settling: dict[Key, int] = {}
        self._made: dict[Key, Made] = {}  # made, until a describe shows it and status records it

    def failing(self, key: Key) -> bool:
        """Whether the binding waits out a failure's backoff (a resync leaves it alone)."""
        return key in self._failures

    def erring(self, key: Key) -> bool:
        """Whether the binding waits out a failure to talk to AWS (not a user's mistake its status reports)."""
        failure = self._failures.get(key)
        return failure is not None and failure.kind not in USER_FAULTS

    def settling(self, key: Key) -> bool:
        """Whether the binding's next look is a check that EC2 has settled."""
        return key in self._settling

    def made(self, key: Key) -> Made | None:
        """The association this process made for the binding last, while no describe has shown it
        or its status has not recorded it: deletion must know it."""
        return self._made.get(key)

    def observed(self, binding: Binding, association: Association | None) -> Association | None:
        """What EC2's describe shows of the binding's instance, corrected for its lag: an association
        made less than ``VISIBILITY_GRACE`` ago that no describe has shown yet is taken as EC2 answered it."""
        made = self._made.get(binding.key)
        if made is None:
            return association
        if association is not None and association.association_id == made.association.association_id:
            if binding.status.get("associationId") == association.association_id:
                del self._made[binding.key]  # seen and recorded
            else:
                self._made[binding.key] = replace(made, seen=True)
            return association
        if association is None and not made.seen and self._clock() - made.at < VISIBILITY_GRACE:
            return made.association
        return association

    def forget(self, key: Key) -> None:
        self._failures.pop(key, None)
        self._settled(key)
        self._made.pop(key, None)

    def _settle_delay(self, key: Key) -> float:
        attempt = self._settling[key] = self._settling.get(key, 0) + 1
        delay = backoff(attempt - 1, self._settings.settle_base_seconds, self._settings.settle_max_seconds)
        return on_grid(self._clock(), delay, SETTLE_GRID)

    def _settled(self, key: Key) -> None:
        self._settling.pop(key, None)

    def succeeded(self, binding: Binding, desired: Desired, action: Action, result: Association | None) -> Step:
        key, target = binding.key, desired.target
        self._failures.pop(key, None)
        made = self._made.get(key)
        managed = made.association.association_id if made else binding.status.get("associationId")  # the latest we made wins
        ours = {managed, binding.status.get("associationId")}
        profile = desired.profile.display
        drift = is_drift(action, status.was_ready(binding.status, binding.generation))
        if isinstance(action, InSync):
            self._settled(key)
            a = action.association
            events = ()
            if is_adoption(action, managed):
                adopted = f"adopted association {a.association_id} of {a.profile_arn}, already on {target.instance_id}"
                if managed is None:  # a plain adoption: its status records it, spared a third API write
                    log.info("%s: %s", binding.ref, adopted)
                else:  # in place of the association it recorded: worth an Event
                    events = (Event(NORMAL, Reason.ADOPTED, f"{adopted}, in place of {managed}"),)
            return Step(Report(Reason.ASSOCIATED, f"{target.instance_id} carries {a.profile_arn}", ready=True, association=a), events)
        if isinstance(action, Settling):
            a = action.association
            reason = Reason.ASSOCIATING if a.state is AssociationState.ASSOCIATING else Reason.DISASSOCIATING
            message = f"EC2 reports association {a.association_id} of {a.profile_arn} as {a.state.value}"
            # Only an association this binding made or recorded goes into its status (its record).
            return Step(Report(reason, message, reconciling=True, association=a if a.association_id in ours else None),
                        requeue=self._settle_delay(key))
        assert result is not None
        if isinstance(action, Disassociate):
            message = (
                f"instance {target.instance_id} is stopped and EC2 replaces profiles of running instances only: "
                f"disassociated {action.association.profile_arn} ({action.association.association_id}); associating {profile} next"
            )
            self._settled(key)
            event = Event(NORMAL, Reason.DRIFT_CORRECTED if drift else Reason.DISASSOCIATED, message)
            report = Report(Reason.DISASSOCIATING, message, reconciling=True,
                            association=result if result.association_id in ours else None)
            return Step(report, (event,), requeue=0.0)
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
        self._made[key] = Made(result, target, self._clock())
        if result.state is AssociationState.ASSOCIATED and desired.profile.matches(result.profile_arn):
            self._settled(key)
            return Step(Report(Reason.ASSOCIATED, f"{target.instance_id} carries {result.profile_arn}", ready=True, association=result), (event,))
        # No status yet: the first settle check usually finds the association associated, and
        # one write then shows the binding Ready; one that finds it still associating says so.
        self._settling[key] = 0
        return Step(None, (event,), requeue=self._settle_delay(key))

    def failed(self, binding: Binding, kind: FaultKind, message: str) -> Step:
        """A step that could not be taken: the status keeps its record (what a failed look at EC2
        did or did not show is no evidence of what this binding manages)."""
        policy = POLICIES[kind]
        now = self._clock()
        failure = self._failures.get(binding.key)
        if failure is None or failure.kind is not kind or failure.generation != binding.generation:
            failure = self._failures[binding.key] = Failure(kind, now, binding.generation)
        failure.attempts += 1
        delay = backoff(failure.attempts - 1, self._settings.retry_base_seconds, self._settings.retry_max_seconds)
        if failure.attempts <= policy.quiet_attempts:
            log.info("%s: %s (attempt %d, retrying quietly in %.1f s)", binding.ref, message, failure.attempts, delay)
            return Step(None, requeue=delay)
        stalled, delay = stalled_and_next_try(policy, failure.since, now, delay)
        log.warning("%s: %s (attempt %d, retrying in %.1f s)", binding.ref, message, failure.attempts, delay)
        report = Report(policy.reason, message, reconciling=not stalled, stalled=stalled, association_known=False)
        return Step(report, (Event(WARNING, policy.reason, message),), requeue=delay)
