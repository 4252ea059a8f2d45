"""The decision core: desired spec + observed EC2 state -> the one next action."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instance_profile_operator.core.decision import (
    Associate,
    Disassociate,
    Finished,
    InSync,
    InstanceGone,
    LookUpInstance,
    Replace,
    Settling,
    WaitForInstance,
    decide,
    is_adoption,
    is_drift,
)
from instance_profile_operator.core.model import (
    Association,
    AssociationState,
    Desired,
    InstanceState,
    ProfileRef,
    Target,
)

ACCOUNT = "123456789012"
DESIRED_ARN = f"arn:aws:iam::{ACCOUNT}:instance-profile/team/web"
OTHER_ARN = f"arn:aws:iam::{ACCOUNT}:instance-profile/team/db"
TARGET = Target("eu-west-1", "i-0123456789abcdef0")

PROFILE_BY = {
    "by-arn": ProfileRef(arn=DESIRED_ARN),
    "by-name": ProfileRef(name="web"),
}


def desired(profile: ProfileRef, retain: bool = False) -> Desired:
    return Desired(target=TARGET, profile=profile, retain=retain)


def association(state: AssociationState, arn: str, association_id: str = "iip-assoc-0001") -> Association:
    return Association(
        association_id=association_id,
        instance_id=TARGET.instance_id,
        profile_arn=arn,
        profile_id="AIPA" + arn.rsplit("/", 1)[-1].upper(),
        state=state,
    )


# --------------------------------------------------------------------------------------------
# (a) decide(): every association case x every instance state x profile given by ARN or name
# --------------------------------------------------------------------------------------------

A = AssociationState
ASSOCIATION_CASES: dict[str, Association | None] = {
    "none": None,
    "associated-with-desired": association(A.ASSOCIATED, DESIRED_ARN),
    "associating-with-desired": association(A.ASSOCIATING, DESIRED_ARN),
    "disassociating-with-desired": association(A.DISASSOCIATING, DESIRED_ARN),
    "associated-with-other": association(A.ASSOCIATED, OTHER_ARN),
    "associating-with-other": association(A.ASSOCIATING, OTHER_ARN),
    "disassociating-with-other": association(A.DISASSOCIATING, OTHER_ARN),
    "disassociated-with-other": association(A.DISASSOCIATED, OTHER_ARN),
}

S = InstanceState

# What the operator should do when nothing is associated: it needs the instance state.
_NOTHING_ASSOCIATED = {
    S.UNKNOWN: LookUpInstance,
    S.PENDING: WaitForInstance,
    S.RUNNING: Associate,
    S.STOPPING: WaitForInstance,
    S.STOPPED: Associate,  # EC2 associates with stopped instances too
    S.SHUTTING_DOWN: InstanceGone,
    S.TERMINATED: InstanceGone,
    S.NOT_FOUND: InstanceGone,
}
# Another profile is settled on the instance: replace it on a running instance, disassociate
# it on a stopped one (Replace needs a running instance).
_OTHER_ASSOCIATED = {
    S.UNKNOWN: LookUpInstance,
    S.PENDING: WaitForInstance,
    S.RUNNING: Replace,
    S.STOPPING: WaitForInstance,
    S.STOPPED: Disassociate,
    S.SHUTTING_DOWN: InstanceGone,
    S.TERMINATED: InstanceGone,
    S.NOT_FOUND: InstanceGone,
}
_ALWAYS_IN_SYNC = {state: InSync for state in S}
_ALWAYS_SETTLING = {state: Settling for state in S}

EXPECTED: dict[tuple[str, InstanceState], type] = {}
for _case, _row in {
    "none": _NOTHING_ASSOCIATED,
    "associated-with-desired": _ALWAYS_IN_SYNC,
    "associating-with-desired": _ALWAYS_SETTLING,
    "disassociating-with-desired": _ALWAYS_SETTLING,
    "associated-with-other": _OTHER_ASSOCIATED,
    "associating-with-other": _ALWAYS_SETTLING,
    "disassociating-with-other": _ALWAYS_SETTLING,
    "disassociated-with-other": _NOTHING_ASSOCIATED,  # history: same as no association
}.items():
    for _state, _action in _row.items():
        EXPECTED[(_case, _state)] = _action


def test_expected_table_is_complete():
    assert set(_NOTHING_ASSOCIATED) == set(S)
    assert set(_OTHER_ASSOCIATED) == set(S)
    assert len(EXPECTED) == len(ASSOCIATION_CASES) * len(S)


DECIDE_CASES = [
    pytest.param(case, state, profile_by, id=f"{case}-{state.value}-{profile_by}")
    for case in ASSOCIATION_CASES
    for state in S
    for profile_by in PROFILE_BY
]


@pytest.mark.parametrize(("case", "state", "profile_by"), DECIDE_CASES)
def test_decide_table(case: str, state: InstanceState, profile_by: str):
    profile = PROFILE_BY[profile_by]
    observed = ASSOCIATION_CASES[case]

    action = decide(desired(profile), observed, state)

    expected = EXPECTED[(case, state)]
    assert type(action) is expected
    # The action carries what its executor needs.
    if expected in (InSync, Settling, Disassociate):
        assert action.association == observed
    if expected is Replace:
        assert action.association == observed
        assert action.profile == profile
    if expected is Associate:
        assert action.profile == profile
    if expected in (WaitForInstance, InstanceGone):
        assert action.state is state


# --------------------------------------------------------------------------------------------
# (b) properties of decide()
# --------------------------------------------------------------------------------------------

MUTATIONS = (Associate, Replace, Disassociate)
NAMES = ["web", "db", "cache", "x"]
ARNS = [
    f"arn:{partition}:iam::{ACCOUNT}:instance-profile{path}{name}"
    for partition in ("aws", "aws-cn", "aws-us-gov")
    for path in ("/", "/team/", "/team/x/")
    for name in NAMES
]

profiles = st.one_of(
    st.builds(ProfileRef, arn=st.sampled_from(ARNS)),
    st.builds(ProfileRef, name=st.sampled_from(NAMES)),
)
desireds = st.builds(desired, profiles, st.booleans())
associations = st.one_of(
    st.none(),
    st.builds(
        association,
        st.sampled_from(list(AssociationState)),
        st.sampled_from(ARNS),
        st.sampled_from(["iip-assoc-0001", "iip-assoc-0002"]),
    ),
)
states = st.sampled_from(list(InstanceState))
known_states = st.sampled_from([s for s in InstanceState if s is not InstanceState.UNKNOWN])


@given(desireds, associations, states)
def test_decide_never_finishes(want, observed, state):
    assert not isinstance(decide(want, observed, state), Finished)


@given(desireds, associations, states)
def test_decide_looks_up_only_for_unknown_instance(want, observed, state):
    if isinstance(decide(want, observed, state), LookUpInstance):
        assert state is InstanceState.UNKNOWN


@given(desireds, associations, known_states)
def test_decide_never_looks_up_a_known_instance(want, observed, state):
    assert not isinstance(decide(want, observed, state), LookUpInstance)


@given(desireds, associations, states)
def test_decide_leaves_the_desired_profile_alone(want, observed, state):
    if observed is not None and observed.state in (A.ASSOCIATED, A.ASSOCIATING) and want.profile.matches(observed.profile_arn):
        action = decide(want, observed, state)
        assert not isinstance(action, MUTATIONS)


@given(desireds, associations, states)
def test_decide_replaces_only_running_instances(want, observed, state):
    if isinstance(decide(want, observed, state), Replace):
        assert state is InstanceState.RUNNING


@given(desireds, associations, known_states)
def test_decide_lookup_is_transparent(want, observed, real):
    first = decide(want, observed, InstanceState.UNKNOWN)
    direct = decide(want, observed, real)
    if isinstance(first, LookUpInstance):
        assert not isinstance(direct, LookUpInstance)  # the second call always settles it
    else:
        assert first == direct  # the state was not needed, so it cannot change the answer


MANAGED = "iip-assoc-managed"


# --------------------------------------------------------------------------------------------
# (c) is_drift() and is_adoption()
# --------------------------------------------------------------------------------------------

_SETTLED = association(A.ASSOCIATED, DESIRED_ARN, MANAGED)
_OTHER = association(A.ASSOCIATED, OTHER_ARN, "iip-assoc-other")


@pytest.mark.parametrize(
    ("action", "was_ready", "expected"),
    [
        pytest.param(Associate(PROFILE_BY["by-name"]), True, True, id="associate-after-ready"),
        pytest.param(Replace(_OTHER, PROFILE_BY["by-name"]), True, True, id="replace-after-ready"),
        pytest.param(Disassociate(_OTHER), True, True, id="disassociate-after-ready"),
        pytest.param(Associate(PROFILE_BY["by-name"]), False, False, id="associate-first-time"),
        pytest.param(Replace(_OTHER, PROFILE_BY["by-name"]), False, False, id="replace-not-ready"),
        pytest.param(InSync(_SETTLED), True, False, id="in-sync"),
        pytest.param(Settling(_SETTLED), True, False, id="settling"),
        pytest.param(LookUpInstance(), True, False, id="lookup"),
        pytest.param(WaitForInstance(S.PENDING), True, False, id="wait"),
        pytest.param(InstanceGone(S.TERMINATED), True, False, id="gone"),
    ],
)
def test_is_drift(action, was_ready, expected):
    assert is_drift(action, was_ready) is expected


@pytest.mark.parametrize(
    ("action", "managed_id", "expected"),
    [
        pytest.param(InSync(_SETTLED), MANAGED, False, id="in-sync-with-managed"),
        pytest.param(InSync(_SETTLED), None, True, id="in-sync-nothing-recorded"),
        pytest.param(InSync(_SETTLED), "iip-assoc-older", True, id="in-sync-other-id-recorded"),
        pytest.param(Settling(_SETTLED), None, False, id="settling-is-not-adoption"),
        pytest.param(Associate(PROFILE_BY["by-arn"]), None, False, id="associate-is-not-adoption"),
        pytest.param(Replace(_OTHER, PROFILE_BY["by-arn"]), None, False, id="replace-is-not-adoption"),
    ],
)
def test_is_adoption(action, managed_id, expected):
    assert is_adoption(action, managed_id) is expected
