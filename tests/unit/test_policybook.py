"""The policy book: watch events in, verdicts and the namespaces to re-evaluate out."""

from __future__ import annotations

from instance_profile_operator.core.model import ProfileRef
from instance_profile_operator.core.policy import OWN_ACCOUNT, Allowed, Denied, Rule
from instance_profile_operator.core.policybook import NamespaceNotSeen, PolicyBook

WEB = ProfileRef(name="web")


def namespace(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}}}


def policy(name: str, selector: dict, profiles: list | None = None) -> dict:
    return {"metadata": {"name": name}, "spec": {"namespaceSelector": selector, "instanceProfiles": [{"name": "*"}] if profiles is None else profiles}}


def book_with(*namespaces: dict) -> PolicyBook:
    book = PolicyBook()
    for body in namespaces:
        book.on_namespace(None, body)
    return book


def test_unknown_namespace_is_not_decided():
    assert PolicyBook().evaluate("team-a", WEB, "us-east-1") == NamespaceNotSeen("team-a")


def test_policy_events_name_the_namespaces_they_select_before_and_after():
    book = book_with(namespace("team-a", team="a"), namespace("team-b", team="b"), namespace("other"))
    assert book.on_policy("ADDED", policy("p", {"matchLabels": {"team": "a"}})) == {"team-a"}
    assert book.evaluate("team-a", WEB, "us-east-1") == Allowed(OWN_ACCOUNT, ("p",))
    assert book.on_policy("MODIFIED", policy("p", {"matchLabels": {"team": "b"}})) == {"team-a", "team-b"}
    assert book.evaluate("team-a", WEB, "us-east-1").rule is Rule.NO_POLICY
    assert book.on_policy("MODIFIED", policy("p", {"matchLabels": {"team": "b"}})) == set()  # no change
    assert book.on_policy("DELETED", policy("p", {"matchLabels": {"team": "b"}})) == {"team-b"}
    assert book.policies == []


def test_namespace_events_matter_when_the_selecting_policies_change():
    book = book_with()
    book.on_policy(None, policy("p", {"matchLabels": {"team": "a"}}))
    assert book.on_namespace("ADDED", namespace("ns")) == {"ns"}  # new: whatever waited on it
    assert book.on_namespace("MODIFIED", namespace("ns", env="x")) == set()
    assert book.on_namespace("MODIFIED", namespace("ns", team="a")) == {"ns"}
    assert isinstance(book.evaluate("ns", WEB, "us-east-1"), Allowed)
    assert book.on_namespace("MODIFIED", namespace("ns")) == {"ns"}
    assert book.on_namespace("DELETED", namespace("ns")) == set()
    assert book.labels("ns") is None


def test_invalid_policy_allows_nothing_and_is_reported():
    book = book_with(namespace("ns"))
    book.on_policy("ADDED", policy("p", {}))
    assert book.on_policy("MODIFIED", policy("p", {}, profiles=[])) == {"ns"}
    assert "needs at least one entry" in book.invalid["p"]
    verdict = book.evaluate("ns", WEB, "us-east-1")
    assert isinstance(verdict, Denied) and verdict.rule is Rule.NO_POLICY
    book.on_policy("MODIFIED", policy("p", {}))
    assert book.invalid == {} and isinstance(book.evaluate("ns", WEB, "us-east-1"), Allowed)


def test_a_policy_naming_a_role_re_evaluates_the_namespaces_of_every_policy_naming_it():
    book = book_with(namespace("team-a", team="a"), namespace("team-b", team="b"), namespace("team-c", team="c"))
    role = {"roleArn": "arn:aws:iam::222233334444:role/ops", "externalId": "one"}
    book.on_policy("ADDED", {**policy("a", {"matchLabels": {"team": "a"}}), "spec": {
        **policy("a", {"matchLabels": {"team": "a"}})["spec"], "account": role}})
    book.on_policy("ADDED", policy("c", {"matchLabels": {"team": "c"}}))
    rotated = {**policy("b", {"matchLabels": {"team": "b"}})["spec"], "account": {**role, "externalId": "two"}}
    assert book.on_policy("ADDED", {**policy("b", {}), "spec": rotated}) == {"team-a", "team-b"}
    verdict = book.evaluate("team-a", WEB, "us-east-1")
    assert isinstance(verdict, Denied) and verdict.rule is Rule.AMBIGUOUS_ACCOUNT
    assert book.on_policy("DELETED", {**policy("b", {}), "spec": rotated}) == {"team-a", "team-b"}
    assert isinstance(book.evaluate("team-a", WEB, "us-east-1"), Allowed)
