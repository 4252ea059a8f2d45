"""Plain values: ProfileRef, Binding and the spec they are read from."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from instance_profile_operator.core.api import FINALIZER
from instance_profile_operator.core.model import (
    Association,
    AssociationState,
    Binding,
    Desired,
    InvalidSpec,
    ProfileRef,
    Target,
)

ACCOUNT = "123456789012"


@pytest.mark.parametrize(
    ("ref", "arn", "expected"),
    [
        pytest.param(ProfileRef(name="web"), f"arn:aws:iam::{ACCOUNT}:instance-profile/web", True, id="name-no-path"),
        pytest.param(ProfileRef(name="web"), f"arn:aws:iam::{ACCOUNT}:instance-profile/team/x/web", True,
                     id="name-with-path"),
        pytest.param(ProfileRef(name="x"), f"arn:aws:iam::{ACCOUNT}:instance-profile/team/x/web", False,
                     id="path-segment-is-not-the-name"),
        pytest.param(ProfileRef(name="team"), f"arn:aws:iam::{ACCOUNT}:instance-profile/team/x/web", False,
                     id="first-path-segment-is-not-the-name"),
        pytest.param(ProfileRef(name="we"), f"arn:aws:iam::{ACCOUNT}:instance-profile/web", False, id="name-prefix"),
        pytest.param(ProfileRef(name="eb"), f"arn:aws:iam::{ACCOUNT}:instance-profile/web", False, id="name-suffix"),
        pytest.param(ProfileRef(name="web"), f"arn:aws-cn:iam::{ACCOUNT}:instance-profile/web", True, id="name-china"),
        pytest.param(ProfileRef(name="web"), f"arn:aws-us-gov:iam::{ACCOUNT}:instance-profile/team/web", True,
                     id="name-govcloud-with-path"),
        pytest.param(ProfileRef(name="web"), f"arn:aws:iam::{ACCOUNT}:instance-profile/web-2", False,
                     id="name-other-profile"),
        pytest.param(ProfileRef(arn=f"arn:aws:iam::{ACCOUNT}:instance-profile/team/web"),
                     f"arn:aws:iam::{ACCOUNT}:instance-profile/team/web", True, id="arn-exact"),
        pytest.param(ProfileRef(arn=f"arn:aws:iam::{ACCOUNT}:instance-profile/team/web"),
                     f"arn:aws:iam::{ACCOUNT}:instance-profile/other/web", False, id="arn-other-path-same-name"),
        pytest.param(ProfileRef(arn=f"arn:aws:iam::{ACCOUNT}:instance-profile/web"),
                     "arn:aws:iam::999999999999:instance-profile/web", False, id="arn-other-account"),
        pytest.param(ProfileRef(arn=f"arn:aws:iam::{ACCOUNT}:instance-profile/web"),
                     f"arn:aws-cn:iam::{ACCOUNT}:instance-profile/web", False, id="arn-other-partition"),
        pytest.param(ProfileRef(arn=f"arn:aws-us-gov:iam::{ACCOUNT}:instance-profile/web"),
                     f"arn:aws-us-gov:iam::{ACCOUNT}:instance-profile/web", True, id="arn-govcloud-exact"),
    ],
)
def test_profile_ref_matches(ref: ProfileRef, arn: str, expected: bool):
    assert ref.matches(arn) is expected


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="neither"),
        pytest.param({"arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/web", "name": "web"}, id="both"),
    ],
)
def test_profile_ref_takes_exactly_one(kwargs):
    with pytest.raises(InvalidSpec):
        ProfileRef(**kwargs)


def test_invalid_spec_is_a_value_error():
    assert issubclass(InvalidSpec, ValueError)


@pytest.mark.parametrize(
    ("ref", "request_", "display"),
    [
        pytest.param(ProfileRef(name="web"), {"Name": "web"}, "web", id="name"),
        pytest.param(ProfileRef(arn=f"arn:aws:iam::{ACCOUNT}:instance-profile/web"),
                     {"Arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/web"},
                     f"arn:aws:iam::{ACCOUNT}:instance-profile/web", id="arn"),
    ],
)
def test_profile_ref_request_and_display(ref, request_, display):
    assert ref.as_request() == request_
    assert ref.display == display


def test_association_from_aws():
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    item = {
        "AssociationId": "iip-assoc-1",
        "InstanceId": "i-0123456789abcdef0",
        "IamInstanceProfile": {"Arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/web", "Id": "AIPAWEB"},
        "State": "associating",
        "Timestamp": when,
    }
    assert Association.from_aws(item) == Association(
        "iip-assoc-1", "i-0123456789abcdef0", f"arn:aws:iam::{ACCOUNT}:instance-profile/web", "AIPAWEB",
        AssociationState.ASSOCIATING, when,
    )


def test_association_from_aws_defaults_to_associated():
    item = {"AssociationId": "iip-assoc-1", "InstanceId": "i-1", "IamInstanceProfile": {"Arn": "a", "Id": "b"}}
    assert Association.from_aws(item).state is AssociationState.ASSOCIATED


# --------------------------------------------------------------------------------------------
# Binding
# --------------------------------------------------------------------------------------------


def body(spec: dict | None = None, **meta) -> dict:
    metadata = {
        "namespace": "team-a",
        "name": "web-1",
        "uid": "uid-1",
        "generation": 3,
        "creationTimestamp": "2025-01-01T00:00:00Z",
    }
    metadata.update(meta)
    return {
        "metadata": metadata,
        "spec": spec if spec is not None else {"instanceId": "i-0123456789abcdef0",
                                               "iamInstanceProfile": {"name": "web"}},
        "status": {"associationId": "iip-assoc-1"},
    }


def test_binding_from_body():
    binding = Binding.from_body(body())
    assert binding.key == ("team-a", "web-1")
    assert binding.ref == "team-a/web-1"
    assert binding.uid == "uid-1"
    assert binding.generation == 3
    assert binding.created == "2025-01-01T00:00:00Z"
    assert binding.deleting is False
    assert binding.finalized is False
    assert binding.spec["instanceId"] == "i-0123456789abcdef0"
    assert binding.status == {"associationId": "iip-assoc-1"}
    assert binding.precedence == ("2025-01-01T00:00:00Z", False, "team-a", "web-1")  # False: it manages one


def test_binding_from_body_deleting():
    assert Binding.from_body(body(deletionTimestamp="2025-01-02T00:00:00Z")).deleting is True


@pytest.mark.parametrize(
    ("finalizers", "expected"),
    [
        pytest.param(None, False, id="none"),
        pytest.param([], False, id="empty"),
        pytest.param(["other.example.com/finalizer"], False, id="someone-else"),
        pytest.param([FINALIZER], True, id="ours"),
        pytest.param(["other.example.com/finalizer", FINALIZER], True, id="ours-among-others"),
    ],
)
def test_binding_finalizer_detection(finalizers, expected):
    assert Binding.from_body(body(finalizers=finalizers)).finalized is expected


def test_binding_from_minimal_body():
    binding = Binding.from_body({"metadata": {}, "spec": None, "status": None})
    assert binding.generation == 0
    assert binding.spec == {}
    assert binding.status == {}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            {"instanceId": "i-0123456789abcdef0", "iamInstanceProfile": {"name": "web"}},
            Desired(Target("us-east-1", "i-0123456789abcdef0"), ProfileRef(name="web"), retain=False),
            id="default-region",
        ),
        pytest.param(
            {"instanceId": "i-0123456789abcdef0", "iamInstanceProfile": {"name": "web"}, "region": ""},
            Desired(Target("us-east-1", "i-0123456789abcdef0"), ProfileRef(name="web"), retain=False),
            id="empty-region-is-default",
        ),
        pytest.param(
            {"instanceId": "i-01234567", "region": "eu-west-1",
             "iamInstanceProfile": {"arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/web"}},
            Desired(Target("eu-west-1", "i-01234567"), ProfileRef(arn=f"arn:aws:iam::{ACCOUNT}:instance-profile/web"),
                    retain=False),
            id="explicit-region-by-arn",
        ),
        pytest.param(
            {"instanceId": "i-0123456789abcdef0", "iamInstanceProfile": {"name": "web"}, "deletionPolicy": "Retain"},
            Desired(Target("us-east-1", "i-0123456789abcdef0"), ProfileRef(name="web"), retain=True),
            id="retain",
        ),
        pytest.param(
            {"instanceId": "i-0123456789abcdef0", "iamInstanceProfile": {"name": "web"}, "deletionPolicy": "Delete"},
            Desired(Target("us-east-1", "i-0123456789abcdef0"), ProfileRef(name="web"), retain=False),
            id="delete",
        ),
    ],
)
def test_binding_desired(spec, expected):
    assert Binding.from_body(body(spec)).desired("us-east-1") == expected


def test_binding_desired_uses_the_given_default_region():
    spec = {"instanceId": "i-0123456789abcdef0", "iamInstanceProfile": {"name": "web"}}
    assert Binding.from_body(body(spec)).desired("ap-south-1").target == Target("ap-south-1", "i-0123456789abcdef0")


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"iamInstanceProfile": {"name": "web"}}, id="no-instance-id"),
        pytest.param({"instanceId": "", "iamInstanceProfile": {"name": "web"}}, id="empty-instance-id"),
        pytest.param({"instanceId": "0123456789abcdef0", "iamInstanceProfile": {"name": "web"}}, id="no-i-prefix"),
        pytest.param({"instanceId": "ami-01234567", "iamInstanceProfile": {"name": "web"}}, id="image-id"),
        pytest.param({"instanceId": 1234, "iamInstanceProfile": {"name": "web"}}, id="not-a-string"),
        pytest.param({"instanceId": "i-0123456789abcdef0"}, id="no-profile"),
        pytest.param({"instanceId": "i-0123456789abcdef0", "iamInstanceProfile": {}}, id="empty-profile"),
        pytest.param({"instanceId": "i-0123456789abcdef0",
                      "iamInstanceProfile": {"name": "web", "arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/web"}},
                     id="both-arn-and-name"),
    ],
)
def test_binding_desired_rejects_invalid_spec(spec):
    with pytest.raises(InvalidSpec):
        Binding.from_body(body(spec)).desired("us-east-1")


@pytest.mark.parametrize(
    "profile",
    [pytest.param("web", id="string"), pytest.param(["web"], id="list")],
)
def test_binding_desired_rejects_non_mapping_profile(profile):
    spec = {"instanceId": "i-0123456789abcdef0", "iamInstanceProfile": profile}
    with pytest.raises(InvalidSpec):
        Binding.from_body(body(spec)).desired("us-east-1")


@pytest.mark.parametrize("fields", [{"arn": ""}, {"name": ""}, {"arn": "", "name": ""}], ids=["empty-arn", "empty-name", "both-empty"])
def test_profile_ref_rejects_empty_strings(fields):
    with pytest.raises(InvalidSpec):
        ProfileRef(**fields)


def test_bindings_share_their_equal_strings():
    def body(name: str) -> dict:  # as json.loads makes them: every string a new object
        return json.loads(json.dumps({"metadata": {"namespace": "team", "name": name}, "spec": {"region": "eu-west-1"},
                                      "status": {"conditions": [{"type": "Ready", "reason": "Associated"}]}}))

    a, b = Binding.from_body(body("a")), Binding.from_body(body("b"))
    assert a.status == b.status and a.spec == b.spec
    assert a.namespace is b.namespace and a.spec["region"] is b.spec["region"]
    [ready_a], [ready_b] = a.status["conditions"], b.status["conditions"]
    assert [(k, v) for k, v in ready_a.items()] == [(k, v) for k, v in ready_b.items()]
    assert all(x is y for x, y in zip([*ready_a, *ready_a.values()], [*ready_b, *ready_b.values()]))
