"""custody: what a binding's deletion may remove, decided from its record, never from its spec."""

from __future__ import annotations

import pytest

from instance_profile_operator.core.custody import Made, Record, keeps, records, removal
from instance_profile_operator.core.decision import Associate, Disassociate, Finished, InSync, Replace, Settling
from instance_profile_operator.core.model import Association, AssociationState as A, ProfileRef, Target

ROLE = "arn:aws:iam::222233334444:role/ipo"
WEB = "arn:aws:iam::123456789012:instance-profile/web"
ADMIN = "arn:aws:iam::123456789012:instance-profile/admin"
TARGET = Target("eu-west-1", "i-0123456789abcdef0", ROLE)
STATUS = {"associationId": "iip-assoc-1", "instanceProfile": {"arn": WEB}, "region": "eu-west-1", "roleArn": ROLE}


def association(association_id: str = "iip-assoc-1", state: A = A.ASSOCIATED, arn: str = WEB,
                instance_id: str = TARGET.instance_id) -> Association:
    return Association(association_id, instance_id, arn, "AIPA", state)


def made(association_id: str = "iip-assoc-2", target: Target = TARGET) -> Made:
    return Made(association(association_id), target, at=0.0)


# records(): the status and what this process made, nothing of the spec


@pytest.mark.parametrize("status", [{}, {"region": "eu-west-1"}, {"associationId": "iip-assoc-1"}],
                         ids=["never-recorded", "denied-region-only", "no-region"])
def test_a_binding_that_recorded_nothing_may_remove_nothing(status):
    assert records(status, None) == ()


def test_the_recorded_association_in_the_recorded_account_and_region():
    assert records(STATUS, None) == (Record("iip-assoc-1", ROLE, "eu-west-1", WEB),)
    assert records({**STATUS, "roleArn": None}, None)[0].account == ""  # the operator's own credentials


def test_an_association_made_whose_status_write_had_not_landed_is_recorded_too():
    assert records({}, made()) == (Record("iip-assoc-2", ROLE, "eu-west-1", WEB, TARGET.instance_id),)
    assert [r.association_id for r in records(STATUS, made())] == ["iip-assoc-1", "iip-assoc-2"]


def test_the_made_and_recorded_association_is_one_record_knowing_its_instance():
    assert records(STATUS, made("iip-assoc-1")) == (Record("iip-assoc-1", ROLE, "eu-west-1", WEB, TARGET.instance_id),)


# removal(): the recorded association only, still carrying the recorded profile

RECORDED = Record("iip-assoc-1", ROLE, "eu-west-1", WEB)
MADE_HERE = Record("iip-assoc-1", ROLE, "eu-west-1", WEB, TARGET.instance_id)


def test_the_recorded_association_is_disassociated():
    observed = association()
    assert removal(RECORDED, observed) == Disassociate(observed)


def test_one_that_is_still_associating_is_waited_on_not_taken_as_gone():
    assert isinstance(removal(RECORDED, association(state=A.ASSOCIATING)), Settling)


@pytest.mark.parametrize("state", [A.DISASSOCIATING, A.DISASSOCIATED])
def test_one_on_its_way_out_is_left_to_go(state):
    assert isinstance(removal(RECORDED, association(state=state)), Finished)


def test_one_that_now_carries_another_profile_was_changed_outside_and_stays():
    action = removal(RECORDED, association(arn=ADMIN))
    assert isinstance(action, Finished) and ADMIN in action.why


def test_a_recorded_association_that_ec2_does_not_show_is_gone():
    assert isinstance(removal(RECORDED, None), Finished)


def test_one_made_here_that_ec2_does_not_show_yet_is_disassociated_by_its_id():
    action = removal(MADE_HERE, None, None)
    assert isinstance(action, Disassociate)
    assert (action.association.association_id, action.association.instance_id) == ("iip-assoc-1", TARGET.instance_id)


def test_one_made_here_is_gone_when_its_instance_carries_another():
    assert isinstance(removal(MADE_HERE, None, association("iip-assoc-9", arn=ADMIN)), Finished)


# keeps(): the one step that needs no fresh look at the instance's tags


@pytest.mark.parametrize("action,expected", [
    (InSync(association()), True),
    (Settling(association(state=A.ASSOCIATING)), True),
    (InSync(association("iip-assoc-other")), False),  # adoption is admission: tags first
    (Settling(association("iip-assoc-other", state=A.ASSOCIATING)), False),  # not even telling of it
    (Replace(association(), ProfileRef(arn=ADMIN)), False),
    (Associate(ProfileRef(arn=WEB)), False),
])
def test_keeps_only_what_the_binding_recorded(action, expected):
    assert keeps(STATUS, None, TARGET, action) is expected


def test_keeps_what_it_made_before_status_records_it():
    assert keeps({}, made("iip-assoc-1"), TARGET, InSync(association()))
    assert not keeps({}, made("iip-assoc-1", Target("eu-west-1", TARGET.instance_id)), TARGET, InSync(association()))


@pytest.mark.parametrize("elsewhere", [{"region": "us-east-1"}, {"roleArn": None}], ids=["region", "account"])
def test_a_record_of_another_place_is_not_this_one(elsewhere):
    assert not keeps({**STATUS, **elsewhere}, None, TARGET, InSync(association()))
