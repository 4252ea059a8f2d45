"""outcomes: what a reconcile's step writes into the binding's record, and what it remembers it made."""

from __future__ import annotations

import pytest

from instance_profile_operator.core.api import Reason
from instance_profile_operator.core.decision import Associate, InSync, Settling
from instance_profile_operator.core.faults import USER_FAULTS, FaultKind
from instance_profile_operator.core.model import Association, AssociationState as A, Binding, Desired, ProfileRef, Target
from instance_profile_operator.bindings.outcomes import VISIBILITY_GRACE, Outcomes
from instance_profile_operator.settings import Settings

WEB = "arn:aws:iam::123456789012:instance-profile/web"
TARGET = Target("us-east-1", "i-0123456789abcdef0")
DESIRED = Desired(TARGET, ProfileRef(name="web"), retain=False)


def binding(status: dict | None = None) -> Binding:
    return Binding("team-a", "web", "uid-1", 1, "2025-01-01T00:00:00Z", False, True,
                   {"instanceId": TARGET.instance_id, "iamInstanceProfile": {"name": "web"}}, status or {})


def association(association_id: str, state: A = A.ASSOCIATED) -> Association:
    return Association(association_id, TARGET.instance_id, WEB, "AIPA", state)


@pytest.fixture
def outcomes(clock) -> Outcomes:
    return Outcomes(Settings(region="us-east-1"), clock)


def test_what_an_associate_made_is_remembered_until_a_describe_shows_it_and_status_records_it(outcomes):
    made = association("iip-assoc-new", A.ASSOCIATING)
    step = outcomes.succeeded(binding(), DESIRED, Associate(DESIRED.profile), made)
    assert step.report is None  # no status yet: the finalizer must still know it
    assert outcomes.made(binding().key).association == made
    assert outcomes.observed(binding(), association("iip-assoc-new")) == association("iip-assoc-new")
    assert outcomes.made(binding().key) is not None  # seen, but not yet recorded
    assert outcomes.observed(binding({"associationId": "iip-assoc-new"}), association("iip-assoc-new"))
    assert outcomes.made(binding().key) is None


def test_a_describe_that_misses_a_new_association_is_corrected_within_the_grace_only(outcomes, clock):
    made = association("iip-assoc-new")
    outcomes.succeeded(binding(), DESIRED, Associate(DESIRED.profile), made)
    assert outcomes.observed(binding(), None) == made  # not visible yet: no second Associate
    clock.advance(VISIBILITY_GRACE)
    assert outcomes.observed(binding(), None) is None  # believed gone: drift correction may act


def test_once_seen_a_missing_association_is_gone(outcomes):
    outcomes.succeeded(binding(), DESIRED, Associate(DESIRED.profile), association("iip-assoc-new"))
    outcomes.observed(binding(), association("iip-assoc-new"))
    assert outcomes.observed(binding(), None) is None  # removed outside: restored at once


def test_a_settling_association_the_binding_did_not_make_is_not_written_into_its_record(outcomes):
    foreign = association("iip-assoc-foreign", A.ASSOCIATING)
    step = outcomes.succeeded(binding({"associationId": "iip-assoc-1"}), DESIRED, Settling(foreign), None)
    assert step.report.association is None and step.report.association_known
    own = association("iip-assoc-1", A.ASSOCIATING)
    assert outcomes.succeeded(binding({"associationId": "iip-assoc-1"}), DESIRED, Settling(own), None).report.association == own


def test_adopting_writes_the_adopted_association_and_no_event(outcomes):
    adopted = association("iip-assoc-found")
    step = outcomes.succeeded(binding(), DESIRED, InSync(adopted), None)
    assert step.report.association == adopted and step.report.ready and step.events == ()


def test_adopting_in_place_of_the_recorded_association_is_an_event(outcomes):
    adopted = association("iip-assoc-found")
    step = outcomes.succeeded(binding({"associationId": "iip-assoc-1"}), DESIRED, InSync(adopted), None)
    assert step.report.association == adopted and [e.reason for e in step.events] == [Reason.ADOPTED]
    assert "in place of iip-assoc-1" in step.events[0].message


def test_a_failure_keeps_the_record(outcomes):
    step = outcomes.failed(binding({"associationId": "iip-assoc-1"}), FaultKind.INSTANCE_NOT_FOUND, "gone")
    assert step.report is not None and not step.report.association_known


def test_forget_drops_what_was_made(outcomes):
    outcomes.succeeded(binding(), DESIRED, Associate(DESIRED.profile), association("iip-assoc-new"))
    outcomes.forget(binding().key)
    assert outcomes.made(binding().key) is None


@pytest.mark.parametrize(("kind", "erring"), [(kind, kind not in USER_FAULTS) for kind in FaultKind])
def test_only_failures_to_talk_to_aws_count_as_reconcile_errors(outcomes, kind, erring):
    """A user's mistake (an instance that is not there) is in the status, not in reconcile_errors."""
    outcomes.failed(binding(), kind, "message")
    assert outcomes.failing(binding().key) and outcomes.erring(binding().key) is erring


def test_user_faults_are_what_users_write():
    assert {FaultKind.INSTANCE_NOT_FOUND, FaultKind.PROFILE_NOT_FOUND} <= USER_FAULTS
    assert not {FaultKind.THROTTLED, FaultKind.UNAVAILABLE, FaultKind.ACCESS_DENIED,
                FaultKind.CREDENTIALS_UNAVAILABLE} & USER_FAULTS
