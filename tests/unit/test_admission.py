"""Admission decisions: which requests are reviewed, and what is rejected with which message."""

from __future__ import annotations

import pytest

from instance_profile_operator.kube.admission import SET_WEBHOOK_ID, WEBHOOK_ID, needs_review, rejection, review, set_rejection
from instance_profile_operator.core.policy import Account
from instance_profile_operator.core.policybook import PolicyBook

ROLE = Account("arn:aws:iam::222233334444:role/ipo")


def binding(namespace: str = "team-a", profile: dict | None = None, **extra) -> dict:
    spec = {"instanceId": "i-0123456789abcdef0", "iamInstanceProfile": profile or {"name": "team-a-web"}, **extra}
    return {"metadata": {"name": "b", "namespace": namespace}, "spec": spec}


@pytest.fixture
def book() -> PolicyBook:
    book = PolicyBook()
    for name, team in (("team-a", "a"), ("team-b", "b"), ("empty", None)):
        book.on_namespace(None, {"metadata": {"name": name, "labels": {"team": team} if team else {}}})
    book.on_policy(None, {"metadata": {"name": "team-a"}, "spec": {
        "namespaceSelector": {"matchLabels": {"team": "a"}}, "instanceProfiles": [{"name": "team-a-*"}], "regions": ["us-east-1"]}})
    book.on_policy(None, {"metadata": {"name": "team-b"}, "spec": {
        "namespaceSelector": {"matchLabels": {"team": "b"}}, "instanceProfiles": [{"name": "team-b-*"}],
        "instanceTags": {"team": "b"}, "account": {"roleArn": ROLE.role_arn}}})
    return book


DELETING = {"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}, "spec": {"a": 1}}


@pytest.mark.parametrize("operation,body,old,reviewed", [
    ("CREATE", {"spec": {"a": 1}}, None, True),
    ("UPDATE", {"spec": {"a": 2}}, {"spec": {"a": 1}}, True),
    ("UPDATE", {"spec": {"a": 1}, "metadata": {"finalizers": ["f"]}}, {"spec": {"a": 1}}, False),
    ("UPDATE", DELETING, {"spec": {"a": 0}}, False),
    ("DELETE", {"spec": {"a": 1}}, {"spec": {"a": 1}}, False),
    ("CONNECT", {"spec": {"a": 1}}, None, False),
])
def test_needs_review(operation, body, old, reviewed):
    assert needs_review(operation, body, old) is reviewed


@pytest.mark.parametrize("body,expected", [
    (binding(), None),
    (binding(region="eu-west-1"), "denied by InstanceProfilePolicy: region eu-west-1 is not allowed for instance profile team-a-web (InstanceProfilePolicy team-a)"),
    (binding(profile={"name": "team-b-web"}), "denied by InstanceProfilePolicy: instance profile team-b-web is not allowed in namespace team-a (InstanceProfilePolicy team-a)"),
    (binding("empty"), "denied by InstanceProfilePolicy: no InstanceProfilePolicy selects namespace empty; see docs/tenancy.md"),
    (binding("not-seen-yet"), None),
    (binding(profile={}), None),  # invalid: the schema's job
    (binding("team-b", profile={"name": "team-b-web"}), None),  # hangs on tags: the reconcile's to check
])
def test_rejection(book, body, expected):
    assert rejection(body, book, "us-east-1") == expected



def test_a_verdict_that_hangs_on_instance_tags_is_admitted_for_the_reconcile_to_decide(book):
    # the webhook reads Kubernetes state only: no EC2 call, so no tag oracle and no EC2 budget spent
    assert rejection(binding("team-b", profile={"name": "team-b-web"}), book, "us-east-1") is None


def binding_set(namespace: str = "team-a", profile: dict | None = None, **extra) -> dict:
    spec = {"instanceSelector": {"tags": {"role": "web"}}, "iamInstanceProfile": profile or {"name": "team-a-web"}, **extra}
    return {"metadata": {"name": "s", "namespace": namespace}, "spec": spec}


@pytest.mark.parametrize("body,expected", [
    (binding_set(), None),
    (binding_set(region="eu-west-1"), "denied by InstanceProfilePolicy: region eu-west-1 is not allowed for instance profile team-a-web (InstanceProfilePolicy team-a)"),
    (binding_set(profile={"name": "team-b-web"}), "denied by InstanceProfilePolicy: instance profile team-b-web is not allowed in namespace team-a (InstanceProfilePolicy team-a)"),
    (binding_set("empty"), "denied by InstanceProfilePolicy: no InstanceProfilePolicy selects namespace empty; see docs/tenancy.md"),
    (binding_set("not-seen-yet"), None),
    (binding_set(profile={}), None),  # invalid: the schema's job
    (binding_set("team-b", profile={"name": "team-b-web"}), None),  # each child's instance tags: the reconcile's to check
])
def test_set_rejection(book, body, expected):
    assert set_rejection(body, book, "us-east-1") == expected


def review_of(operation: str, body: dict, old: dict | None = None) -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "operation": operation, "object": body, "oldObject": old}}


def test_a_review_answers_with_the_request_uid_and_the_reason(book):
    assert review(review_of("CREATE", binding(profile={"name": "team-b-web"})), book, "us-east-1", WEBHOOK_ID) == {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
            "uid": "u-1", "allowed": False, "status": {"code": 403, "message": (
                "denied by InstanceProfilePolicy: instance profile team-b-web is not allowed in namespace team-a "
                "(InstanceProfilePolicy team-a)")}}}
    assert review(review_of("CREATE", binding()), book, "us-east-1", WEBHOOK_ID)["response"] == {"uid": "u-1", "allowed": True}


@pytest.mark.parametrize("request_", [
    review_of("UPDATE", binding(profile={"name": "team-b-web"}), binding(profile={"name": "team-b-web"})),  # metadata only
    review_of("DELETE", binding(profile={"name": "team-b-web"})),
])
def test_what_leaves_the_spec_alone_is_admitted(book, request_):
    assert review(request_, book, "us-east-1", WEBHOOK_ID)["response"]["allowed"] is True


def test_everything_is_admitted_until_the_book_is_known():
    assert review(review_of("CREATE", binding("empty")), None, "us-east-1", WEBHOOK_ID)["response"] == {"uid": "u-1", "allowed": True}


def test_each_path_judges_its_kind(book):
    denied_set = review_of("CREATE", binding_set(profile={"name": "team-b-web"}))
    assert review(denied_set, book, "us-east-1", SET_WEBHOOK_ID)["response"]["status"]["message"] == (
        "denied by InstanceProfilePolicy: instance profile team-b-web is not allowed in namespace team-a "
        "(InstanceProfilePolicy team-a)")
    assert review(review_of("CREATE", binding_set()), book, "us-east-1", SET_WEBHOOK_ID)["response"]["allowed"] is True


def test_a_path_that_serves_nothing_refuses_and_names_the_paths_that_do(book):
    assert review(review_of("CREATE", binding()), book, "us-east-1", "tenancy-typo")["response"] == {
        "uid": "u-1", "allowed": False, "status": {"code": 404, "message": (
            "no admission webhook at /tenancy-typo; the operator serves /tenancy, /tenancy-sets")}}
