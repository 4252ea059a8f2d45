"""render(), differs(), was_ready() and still_true(): a binding's status as the API conventions want it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from instance_profile_operator.core.api import READY, RECONCILING, STALLED, Reason
from instance_profile_operator.core.model import Association, AssociationState
from instance_profile_operator.core.status import Report, account_of, differs, render, still_true, was_ready

EARLIER = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
EARLIER_TEXT = "2025-01-01T12:00:00Z"
NOW = datetime(2025, 1, 1, 13, 30, 15, tzinfo=timezone.utc)
NOW_TEXT = "2025-01-01T13:30:15Z"
ARN = "arn:aws:iam::123456789012:instance-profile/web"
ASSOCIATED_AT = datetime(2025, 1, 1, 11, 0, 0, tzinfo=timezone.utc)

ASSOCIATION = Association(
    association_id="iip-assoc-1",
    instance_id="i-0123456789abcdef0",
    profile_arn=ARN,
    profile_id="AIPAWEB",
    state=AssociationState.ASSOCIATED,
    timestamp=ASSOCIATED_AT,
)
READY_REPORT = Report(Reason.ASSOCIATED, "web is associated", ready=True, association=ASSOCIATION)


def conditions_by_type(status) -> dict:
    return {c["type"]: c for c in status["conditions"]}


def condition(kind: str, status: str, since: str = EARLIER_TEXT, generation: int = 1, reason: str = "Old") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": "old message",
            "observedGeneration": generation, "lastTransitionTime": since}


@pytest.mark.parametrize(
    ("report", "types"),
    [
        pytest.param(Report(Reason.ASSOCIATED, "m", ready=True), {READY}, id="ready"),
        pytest.param(Report(Reason.ASSOCIATING, "m", reconciling=True), {READY, RECONCILING}, id="reconciling"),
        pytest.param(Report(Reason.ACCESS_DENIED, "m", stalled=True), {READY, STALLED}, id="stalled"),
        pytest.param(Report(Reason.AWS_ERROR, "m", reconciling=True, stalled=True), {READY, RECONCILING, STALLED},
                     id="reconciling-and-stalled"),
        pytest.param(Report(Reason.CONFLICT, "m"), {READY}, id="not-ready"),
    ],
)
def test_conditions_present(report: Report, types: set[str]):
    status = render({}, 1, "eu-west-1", report, NOW)
    by_type = conditions_by_type(status)
    assert set(by_type) == types
    assert status["conditions"][0]["type"] == READY
    assert by_type[READY]["status"] == ("True" if report.ready else "False")
    for kind in types - {READY}:
        assert by_type[kind]["status"] == "True"  # abnormal-true conditions are never written False
    for c in status["conditions"]:
        assert c["reason"] == report.reason
        assert c["message"] == report.message


def test_conditions_dropped_when_no_longer_true():
    previous = {"conditions": [condition(READY, "False"), condition(RECONCILING, "True"), condition(STALLED, "True")]}
    status = render(previous, 1, "eu-west-1", READY_REPORT, NOW)
    assert set(conditions_by_type(status)) == {READY}


@pytest.mark.parametrize(
    ("previous_status", "report", "expected_since"),
    [
        pytest.param("True", Report(Reason.ASSOCIATED, "same", ready=True), EARLIER_TEXT, id="true-stays-true"),
        pytest.param("True", Report(Reason.ADOPTED, "reason and message changed", ready=True), EARLIER_TEXT,
                     id="true-stays-true-new-reason"),
        pytest.param("False", Report(Reason.THROTTLED, "other reason", ready=False), EARLIER_TEXT,
                     id="false-stays-false-new-reason"),
        pytest.param("False", Report(Reason.ASSOCIATED, "m", ready=True), NOW_TEXT, id="false-to-true"),
        pytest.param("True", Report(Reason.ACCESS_DENIED, "m", ready=False), NOW_TEXT, id="true-to-false"),
        pytest.param(None, Report(Reason.ASSOCIATED, "m", ready=True), NOW_TEXT, id="new-condition"),
    ],
)
def test_ready_last_transition_time(previous_status, report, expected_since):
    previous = {"conditions": [condition(READY, previous_status)]} if previous_status else {}
    ready = conditions_by_type(render(previous, 2, "eu-west-1", report, NOW))[READY]
    assert ready["lastTransitionTime"] == expected_since
    assert ready["reason"] == report.reason
    assert ready["message"] == report.message


def test_abnormal_condition_keeps_transition_time_while_true():
    previous = {"conditions": [condition(READY, "False"), condition(STALLED, "True")]}
    report = Report(Reason.ACCESS_DENIED, "still denied", stalled=True, reconciling=True)
    by_type = conditions_by_type(render(previous, 1, "eu-west-1", report, NOW))
    assert by_type[STALLED]["lastTransitionTime"] == EARLIER_TEXT
    assert by_type[READY]["lastTransitionTime"] == EARLIER_TEXT
    assert by_type[RECONCILING]["lastTransitionTime"] == NOW_TEXT  # newly true


def test_timestamps_are_utc_seconds():
    in_paris = NOW.astimezone(timezone(timedelta(hours=1)))
    status = render({}, 1, "eu-west-1", READY_REPORT, in_paris)
    assert status["lastSyncTime"] == NOW_TEXT
    assert status["conditions"][0]["lastTransitionTime"] == NOW_TEXT


def test_observed_generation_on_status_and_conditions():
    previous = {"observedGeneration": 1, "conditions": [condition(READY, "True", generation=1)]}
    report = Report(Reason.ASSOCIATING, "m", reconciling=True)
    status = render(previous, 7, "eu-west-1", report, NOW)
    assert status["observedGeneration"] == 7
    assert [c["observedGeneration"] for c in status["conditions"]] == [7, 7]
    assert status["region"] == "eu-west-1"
    assert status["lastSyncTime"] == NOW_TEXT


def test_association_fields():
    status = render({}, 1, "eu-west-1", READY_REPORT, NOW)
    assert status["associationId"] == "iip-assoc-1"
    assert status["state"] == "associated"
    assert status["instanceProfile"] == {"arn": ARN, "name": ARN.rsplit("/", 1)[-1], "id": "AIPAWEB"}
    assert status["associatedAt"] == "2025-01-01T11:00:00Z"


def test_association_without_timestamp_has_no_associated_at():
    report = Report(Reason.ASSOCIATING, "m", reconciling=True, association=Association(
        "iip-assoc-1", "i-0123456789abcdef0", ARN, "AIPAWEB", AssociationState.ASSOCIATING))
    status = render({"associatedAt": "2024-01-01T00:00:00Z"}, 1, "eu-west-1", report, NOW)
    assert status["state"] == "associating"
    assert "associatedAt" in status and status["associatedAt"] is None


def test_no_association_clears_fields_with_none():
    previous = render({}, 1, "eu-west-1", READY_REPORT, EARLIER)
    status = render(previous, 1, "eu-west-1", Report(Reason.DISASSOCIATED, "m"), NOW)
    for key in ("associationId", "state", "instanceProfile", "associatedAt"):
        assert key in status, f"{key} must be present (as None) so that a merge patch deletes it"
        assert status[key] is None


def test_unknown_association_keeps_previous_fields():
    previous = render({}, 1, "eu-west-1", READY_REPORT, EARLIER)
    report = Report(Reason.AWS_UNAVAILABLE, "EC2 did not answer", reconciling=True, association_known=False)
    status = render(previous, 1, "eu-west-1", report, NOW)
    for key in ("associationId", "state", "instanceProfile", "associatedAt"):
        assert status[key] == previous[key]
    assert status["associationId"] == "iip-assoc-1"


def test_unknown_association_with_no_previous_fields_stays_empty():
    report = Report(Reason.AWS_UNAVAILABLE, "m", association=ASSOCIATION, association_known=False)
    status = render({}, 1, "eu-west-1", report, NOW)
    assert status["associationId"] is None
    assert status["instanceProfile"] is None


# --------------------------------------------------------------------------------------------
# differs()
# --------------------------------------------------------------------------------------------


def test_differs_ignores_last_sync_time_only():
    first = render({}, 1, "eu-west-1", READY_REPORT, EARLIER)
    again = render(first, 1, "eu-west-1", READY_REPORT, NOW)
    assert again["lastSyncTime"] != first["lastSyncTime"]
    assert not differs(first, again)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("associationId", "iip-assoc-2"),
        ("associationId", None),
        ("observedGeneration", 2),
        ("region", "us-east-1"),
        ("state", "disassociating"),
        ("conditions", []),
    ],
)
def test_differs_sees_any_other_change(key, value):
    first = render({}, 1, "eu-west-1", READY_REPORT, EARLIER)
    changed = {**first, key: value, "lastSyncTime": NOW_TEXT}
    assert differs(first, changed)


def test_differs_sees_a_condition_message_change():
    first = render({}, 1, "eu-west-1", READY_REPORT, EARLIER)
    again = render(first, 1, "eu-west-1", Report(Reason.ADOPTED, "adopted", ready=True, association=ASSOCIATION), NOW)
    assert differs(first, again)


def test_differs_none_matches_absent():
    # A field rendered as None is absent from the stored status after the merge patch.
    stored = {k: v for k, v in render({}, 1, "eu-west-1", Report(Reason.CONFLICT, "m"), EARLIER).items()
              if v is not None}
    again = render(stored, 1, "eu-west-1", Report(Reason.CONFLICT, "m"), NOW)
    assert not differs(stored, again)


# --------------------------------------------------------------------------------------------
# was_ready()
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "generation", "expected"),
    [
        pytest.param([condition(READY, "True", generation=3)], 3, True, id="ready-this-generation"),
        pytest.param([condition(READY, "True", generation=2)], 3, False, id="ready-older-generation"),
        pytest.param([condition(READY, "False", generation=3)], 3, False, id="not-ready"),
        pytest.param([condition(RECONCILING, "True", generation=3)], 3, False, id="only-reconciling"),
        pytest.param([], 3, False, id="no-conditions"),
        pytest.param(None, 3, False, id="conditions-null"),
    ],
)
def test_was_ready(conditions, generation, expected):
    assert was_ready({"conditions": conditions}, generation) is expected


def test_was_ready_on_empty_status():
    assert was_ready({}, 1) is False


ROLE = "arn:aws:iam::222233334444:role/ipo"


def test_the_record_is_written_whole_with_its_region_and_account():
    status = render({}, 1, "eu-west-1", READY_REPORT, NOW, ROLE)
    assert (status["associationId"], status["region"], status["roleArn"]) == ("iip-assoc-1", "eu-west-1", ROLE)
    assert render({}, 1, "eu-west-1", READY_REPORT, NOW)["roleArn"] is None  # the operator's own account


def test_a_report_that_does_not_know_the_association_keeps_the_whole_record():
    previous = render({}, 1, "eu-west-1", READY_REPORT, EARLIER, ROLE)
    denied = Report(Reason.POLICY_DENIED, "no", stalled=True, association_known=False)
    status = render(previous, 2, "us-east-1", denied, NOW, "")  # the spec now names another region
    assert (status["associationId"], status["region"], status["roleArn"]) == ("iip-assoc-1", "eu-west-1", ROLE)
    assert render({}, 1, "us-east-1", denied, NOW)["region"] == "us-east-1"  # nothing recorded: the spec's region


@pytest.mark.parametrize(
    ("recorded", "ready_generation", "observed", "expected"),
    [
        pytest.param("iip-1", 3, "iip-1", True, id="ready-and-ec2-shows-it"),
        pytest.param("iip-1", 3, "iip-2", False, id="replaced-outside-kubernetes"),
        pytest.param("iip-1", 3, None, False, id="removed-or-not-described"),
        pytest.param(None, 3, None, False, id="nothing-recorded-nothing-found"),
        pytest.param("iip-1", 2, "iip-1", False, id="spec-changed-since"),
    ],
)
def test_still_true(recorded, ready_generation, observed, expected):
    status = {"associationId": recorded, "conditions": [condition(READY, "True", generation=ready_generation)]}
    assert still_true(status, 3, observed) is expected


@pytest.mark.parametrize(("arn", "account"), [
    ("arn:aws:iam::444455556666:role/ipo", "444455556666"),
    ("arn:aws-cn:iam::123456789012:instance-profile/team-a/web", "123456789012"),
    ("arn:aws:iam:::role/x", None),
    ("not-an-arn", None),
    (None, None),
])
def test_account_of_an_arn(arn, account):
    assert account_of(arn) == account


def test_the_account_is_the_roles_else_the_profiles():
    own = render({}, 1, "us-east-1", Report(Reason.ASSOCIATED, "m", ready=True, association=ASSOCIATION), NOW)
    assert own["account"] == ASSOCIATION.profile_arn.split(":")[4]
    other = render({}, 1, "us-east-1", Report(Reason.ASSOCIATED, "m", ready=True, association=ASSOCIATION), NOW,
                   role_arn="arn:aws:iam::444455556666:role/ipo")
    assert other["account"] == "444455556666"
    assert render({}, 1, "us-east-1", Report(Reason.INSTANCE_NOT_FOUND, "m"), NOW)["account"] is None
