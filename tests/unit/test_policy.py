"""Tenancy rules: parsing, selectors, globs and the evaluation of a binding against policies."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from instance_profile_operator.core.model import ProfileRef
from instance_profile_operator.core.policy import (
    OWN_ACCOUNT,
    Account,
    Allowed,
    Denied,
    InvalidPolicy,
    NeedsInstanceTags,
    Policy,
    ProfilePattern,
    Rule,
    Selector,
    evaluate,
    glob_matches,
    parse_policy,
    parse_selector,
)

A = "111122223333"
B = "222233334444"
ROLE_A = Account(f"arn:aws:iam::{A}:role/instance-profile-operator", "ext-a")
ROLE_B = Account(f"arn:aws:iam::{B}:role/instance-profile-operator")
ARN_A_WEB = f"arn:aws:iam::{A}:instance-profile/team-a/web"


def body(name: str, **spec) -> dict:
    spec.setdefault("namespaceSelector", {})
    spec.setdefault("instanceProfiles", [{"name": "*"}])
    return {"metadata": {"name": name}, "spec": spec}


def policy(name: str, **spec) -> Policy:
    return parse_policy(body(name, **spec))


TEAM_A = policy(
    "team-a",
    namespaceSelector={"matchLabels": {"team": "a"}},
    instanceProfiles=[{"arn": f"arn:aws:iam::{A}:instance-profile/team-a/*"}, {"name": "team-a-*"}],
    instanceTags={"team": "a"},
    regions=["us-east-1"],
    account={"roleArn": ROLE_A.role_arn, "externalId": "ext-a"},
)
TEAM_B = policy("team-b", namespaceSelector={"matchLabels": {"team": "b"}}, instanceProfiles=[{"name": "team-b-*"}])


# -- parsing -------------------------------------------------------------------------------


def test_parse_keeps_every_field():
    assert TEAM_A.name == "team-a"
    assert TEAM_A.selector == Selector((("team", "a"),))
    assert TEAM_A.profiles == (ProfilePattern(f"arn:aws:iam::{A}:instance-profile/team-a/*", True), ProfilePattern("team-a-*", False))
    assert TEAM_A.instance_tags == (("team", "a"),)
    assert TEAM_A.regions == frozenset({"us-east-1"})
    assert TEAM_A.account == ROLE_A and TEAM_A.account.key == ROLE_A.role_arn
    assert TEAM_B.regions is None and TEAM_B.account == OWN_ACCOUNT and OWN_ACCOUNT.key == ""


INVALID = [
    ("no-spec", {"metadata": {"name": "p"}}, "spec must be an object"),
    ("no-selector", {"metadata": {"name": "p"}, "spec": {"instanceProfiles": [{"name": "x"}]}}, "spec.namespaceSelector must be an object"),
    ("no-profiles", body("p", instanceProfiles=[]), "needs at least one entry"),
    ("profiles-not-list", body("p", instanceProfiles={"name": "x"}), "needs at least one entry"),
    ("entry-both", body("p", instanceProfiles=[{"name": "x", "arn": "arn:*"}]), "instanceProfiles[0] takes exactly one of arn or name"),
    ("entry-neither", body("p", instanceProfiles=[{}]), "takes exactly one of arn or name"),
    ("entry-number", body("p", instanceProfiles=[{"name": 3}]), "takes exactly one of arn or name"),
    ("entry-not-object", body("p", instanceProfiles=["x"]), "instanceProfiles[0] must be an object"),
    ("bad-operator", body("p", namespaceSelector={"matchExpressions": [{"key": "k", "operator": "Equals", "values": ["v"]}]}), "operator must be one of"),
    ("in-without-values", body("p", namespaceSelector={"matchExpressions": [{"key": "k", "operator": "In"}]}), "In and NotIn need values"),
    ("exists-with-values", body("p", namespaceSelector={"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["v"]}]}), "Exists and DoesNotExist take none"),
    ("expression-without-key", body("p", namespaceSelector={"matchExpressions": [{"operator": "Exists"}]}), "key is required"),
    ("labels-not-strings", body("p", namespaceSelector={"matchLabels": {"team": 1}}), "matchLabels must map strings to strings"),
    ("tags-not-strings", body("p", instanceTags={"team": ["a"]}), "spec.instanceTags must map strings to strings"),
    ("regions-not-list", body("p", regions="us-east-1"), "spec.regions must be a list of strings"),
    ("role-not-arn", body("p", account={"roleArn": "operator"}), "spec.account.roleArn must be an IAM role ARN"),
    ("role-of-user", body("p", account={"roleArn": f"arn:aws:iam::{A}:user/x"}), "roleArn must be an IAM role ARN"),
    ("external-id-number", body("p", account={"roleArn": ROLE_B.role_arn, "externalId": 7}), "externalId must be a string"),
]


@pytest.mark.parametrize("raw,message", [pytest.param(b, m, id=i) for i, b, m in INVALID])
def test_invalid_policy_is_reported_with_its_name(raw, message):
    with pytest.raises(InvalidPolicy) as caught:
        parse_policy(raw)
    assert message in str(caught.value) and str(caught.value).startswith("InstanceProfilePolicy p: ")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
                        ["spec", "metadata", "name", "namespaceSelector", "instanceProfiles", "arn", "matchLabels",
                         "matchExpressions", "key", "operator", "values", "regions", "instanceTags", "account", "roleArn"]),
                        inner, max_size=4), max_leaves=20))
def test_parse_never_crashes_on_garbage(raw):
    try:
        parse_policy(raw if isinstance(raw, dict) else {"spec": raw})
    except InvalidPolicy:
        pass


# -- selectors -----------------------------------------------------------------------------

SELECTORS = [
    ({}, {}, True),
    ({}, {"team": "a"}, True),
    ({"matchLabels": {"team": "a"}}, {"team": "a", "env": "x"}, True),
    ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
    ({"matchLabels": {"team": "a"}}, {}, False),
    ({"matchLabels": {"team": "a", "env": "prod"}}, {"team": "a"}, False),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, {"team": "b"}, True),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, {"team": "c"}, False),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, {}, False),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {"team": "a"}, False),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {"team": "b"}, True),
    ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, {"team": ""}, True),
    ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, {}, True),
    ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, {"team": "a"}, False),
    ({"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}, {"team": "a"}, False),
    ({"matchLabels": {"kubernetes.io/metadata.name": "team-a"}}, {"kubernetes.io/metadata.name": "team-a"}, True),
]


@pytest.mark.parametrize("selector,labels,selected", SELECTORS)
def test_selector(selector, labels, selected):
    assert parse_selector(selector).matches(labels) is selected


KEYS = st.sampled_from(["team", "env", "tier"])
VALUES = st.sampled_from(["a", "b", "c"])
LABELS = st.dictionaries(KEYS, VALUES)
EXPRESSIONS = st.one_of(
    st.builds(lambda k, o, v: {"key": k, "operator": o, "values": v}, KEYS, st.sampled_from(["In", "NotIn"]), st.lists(VALUES, min_size=1)),
    st.builds(lambda k, o: {"key": k, "operator": o}, KEYS, st.sampled_from(["Exists", "DoesNotExist"])),
)
SELECTOR_BODIES = st.fixed_dictionaries({}, optional={"matchLabels": LABELS, "matchExpressions": st.lists(EXPRESSIONS, max_size=3)})


def oracle_selects(selector: dict, labels: dict) -> bool:
    """Kubernetes' definition, written independently: every label and every expression holds."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for e in selector.get("matchExpressions", []):
        has, value = e["key"] in labels, labels.get(e["key"])
        holds = {"In": has and value in e.get("values", []), "NotIn": not has or value not in e.get("values", []),
                 "Exists": has, "DoesNotExist": not has}[e["operator"]]
        if not holds:
            return False
    return True


@given(SELECTOR_BODIES, LABELS)
def test_selector_agrees_with_kubernetes_semantics(selector, labels):
    assert parse_selector(selector).matches(labels) is oracle_selects(selector, labels)


@given(SELECTOR_BODIES, LABELS, LABELS)
def test_match_labels_only_selectors_are_monotone_in_labels(selector, labels, extra):
    """Adding labels never deselects a namespace unless an expression looks at absence."""
    assume(all(e["operator"] in ("In", "Exists") for e in selector.get("matchExpressions", [])))
    if parse_selector(selector).matches(labels):
        assert parse_selector(selector).matches({**extra, **labels})


# -- globs ---------------------------------------------------------------------------------

GLOBS = [
    ("web", "web", True),
    ("web", "web2", False),
    ("web", "we", False),
    ("*", "", True),
    ("*", "anything/at/all", True),
    ("team-a-*", "team-a-web", True),
    ("team-a-*", "team-a-", True),
    ("team-a-*", "team-b-web", False),
    ("*-web", "team-a-web", True),
    ("a*b*c", "abc", True),
    ("a*b*c", "aXbYc", True),
    ("a*b*c", "acb", False),
    ("ab*ba", "aba", False),  # prefix and suffix may not overlap
    (f"arn:aws:iam::{A}:instance-profile/team-a/*", f"arn:aws:iam::{A}:instance-profile/team-a/apps/web", True),
    (f"arn:aws:iam::{A}:instance-profile/team-a/*", f"arn:aws:iam::{A}:instance-profile/team-b/web", False),
    ("web.?", "web.?", True),  # only * is special
    ("web.?", "webXY", False),
    ("[ab]", "a", False),
]


@pytest.mark.parametrize("pattern,text,matches", GLOBS)
def test_glob(pattern, text, matches):
    assert glob_matches(pattern, text) is matches


GLOB_ALPHABET = st.text(alphabet="ab/*.?", max_size=8)


@given(GLOB_ALPHABET, st.text(alphabet="ab/*.?", max_size=10))
def test_glob_agrees_with_its_regular_expression(pattern, text):
    regex = "".join(".*" if char == "*" else re.escape(char) for char in pattern)
    assert glob_matches(pattern, text) is bool(re.fullmatch(regex, text, re.DOTALL))


# -- evaluation: table ---------------------------------------------------------------------

LABELS_A = {"team": "a"}
NAME_WEB = ProfileRef(name="team-a-web")
TAGS_A = {ROLE_A.key: {"team": "a", "env": "prod"}}
ALL_NAMES_TAGGED_PROD = policy("prod", instanceTags={"env": "prod"}, namespaceSelector={"matchLabels": {"team": "a"}})
OWN_ANY = policy("own-any", namespaceSelector={"matchLabels": {"team": "a"}})
OWN_ANY_TAGGED = policy("own-tagged", namespaceSelector={"matchLabels": {"team": "a"}}, instanceTags={"env": "prod"})
ROLE_B_ANY = policy("role-b", namespaceSelector={}, account={"roleArn": ROLE_B.role_arn})
TEAM_A_OTHER_EXTERNAL_ID = policy("team-a-2", namespaceSelector={"matchLabels": {"team": "a"}},
                                  account={"roleArn": ROLE_A.role_arn, "externalId": "other"})
TEAM_B_SAME_ROLE_OTHER_ID = policy("team-b-2", namespaceSelector={"matchLabels": {"team": "b"}},
                                   account={"roleArn": ROLE_A.role_arn, "externalId": "team-b-secret"})
TEAM_B_SAME_ROLE = policy("team-b-3", namespaceSelector={"matchLabels": {"team": "b"}},
                          account={"roleArn": ROLE_A.role_arn, "externalId": ROLE_A.external_id})

CASES = [
    # id, policies, labels, profile, region, tags, expected verdict (or rule + message fragment)
    ("no-policy-at-all", [], LABELS_A, NAME_WEB, "us-east-1", None,
     (Rule.NO_POLICY, "no InstanceProfilePolicy selects namespace ns; see docs/tenancy.md")),
    ("policy-selects-other-namespaces", [TEAM_B], LABELS_A, NAME_WEB, "us-east-1", None, (Rule.NO_POLICY, "selects namespace ns")),
    ("allowed-by-name-with-tags", [TEAM_A], LABELS_A, NAME_WEB, "us-east-1", TAGS_A, Allowed(ROLE_A, ("team-a",))),
    ("allowed-by-arn-with-tags", [TEAM_A], LABELS_A, ProfileRef(arn=ARN_A_WEB), "us-east-1", TAGS_A, Allowed(ROLE_A, ("team-a",))),
    ("tags-unknown", [TEAM_A], LABELS_A, NAME_WEB, "us-east-1", None, NeedsInstanceTags((ROLE_A,))),
    ("tags-of-other-account-do-not-count", [TEAM_A], LABELS_A, NAME_WEB, "us-east-1", {"": {"team": "a"}}, NeedsInstanceTags((ROLE_A,))),
    ("tag-missing", [TEAM_A], LABELS_A, NAME_WEB, "us-east-1", {ROLE_A.key: {}},
     (Rule.INSTANCE_TAGS, "the instance lacks tag `team=a` required by InstanceProfilePolicy team-a")),
    ("tag-wrong-value", [TEAM_A], LABELS_A, NAME_WEB, "us-east-1", {ROLE_A.key: {"team": "b"}}, (Rule.INSTANCE_TAGS, "lacks tag `team=a`")),
    ("profile-not-allowed", [TEAM_A], LABELS_A, ProfileRef(name="team-b-web"), "us-east-1", TAGS_A,
     (Rule.PROFILE, "instance profile team-b-web is not allowed in namespace ns (InstanceProfilePolicy team-a)")),
    ("arn-outside-path", [TEAM_A], LABELS_A, ProfileRef(arn=f"arn:aws:iam::{A}:instance-profile/team-b/web"), "us-east-1", TAGS_A,
     (Rule.PROFILE, "is not allowed")),
    ("name-never-satisfies-arn-pattern", [policy("arns", instanceProfiles=[{"arn": "*"}])], {}, ProfileRef(name="web"), "us-east-1", None,
     (Rule.PROFILE, "instance profile web is not allowed")),
    ("arn-never-satisfies-name-pattern", [policy("names", instanceProfiles=[{"name": "*"}])], {}, ProfileRef(arn=ARN_A_WEB), "us-east-1", None,
     (Rule.PROFILE, "is not allowed")),
    ("region-not-allowed", [TEAM_A], LABELS_A, NAME_WEB, "eu-west-1", TAGS_A,
     (Rule.REGION, "region eu-west-1 is not allowed for instance profile team-a-web (InstanceProfilePolicy team-a)")),
    ("region-checked-before-tags", [TEAM_A], LABELS_A, NAME_WEB, "eu-west-1", None, (Rule.REGION, "region eu-west-1")),
    ("untagged-policy-of-same-account-needs-no-tags", [TEAM_A, policy("a-untagged", namespaceSelector={"matchLabels": {"team": "a"}},
                                                                        account={"roleArn": ROLE_A.role_arn, "externalId": "ext-a"})],
     LABELS_A, NAME_WEB, "us-east-1", None, Allowed(ROLE_A, ("a-untagged",))),
    ("tagged-policy-of-other-account-needs-tags", [TEAM_A, OWN_ANY], LABELS_A, NAME_WEB, "us-east-1", None, NeedsInstanceTags((ROLE_A,))),
    ("tagged-other-account-without-tag-is-fine", [TEAM_A, OWN_ANY], LABELS_A, NAME_WEB, "us-east-1", {ROLE_A.key: {}},
     Allowed(OWN_ACCOUNT, ("own-any",))),
    ("ambiguous-account", [TEAM_A, OWN_ANY], LABELS_A, NAME_WEB, "us-east-1", TAGS_A,
     (Rule.AMBIGUOUS_ACCOUNT, "ambiguous account: InstanceProfilePolicy own-any acts with the operator's own credentials but team-a with role")),
    ("ambiguity-needs-no-tags-once-decided", [OWN_ANY, ROLE_B_ANY, TEAM_A], LABELS_A, NAME_WEB, "us-east-1", None,
     (Rule.AMBIGUOUS_ACCOUNT, "own-any")),
    ("same-role-other-external-id-is-ambiguous", [TEAM_A, TEAM_A_OTHER_EXTERNAL_ID], LABELS_A, NAME_WEB, "us-east-1", TAGS_A,
     (Rule.AMBIGUOUS_ACCOUNT, "(external ID set)")),
    ("one-role-two-external-ids-across-namespaces-is-ambiguous", [TEAM_A, TEAM_B_SAME_ROLE_OTHER_ID], LABELS_A, NAME_WEB,
     "us-east-1", TAGS_A, (Rule.AMBIGUOUS_ACCOUNT, "InstanceProfilePolicy team-a and team-b-2 name the same role with "
                                                    "different external IDs")),
    ("one-role-one-external-id-across-namespaces-is-fine", [TEAM_A, TEAM_B_SAME_ROLE], LABELS_A, NAME_WEB, "us-east-1", TAGS_A,
     Allowed(ROLE_A, ("team-a",))),
    ("own-credentials-in-many-policies-are-never-ambiguous", [OWN_ANY, policy("other-own", namespaceSelector={"matchLabels": {"team": "b"}})],
     LABELS_A, NAME_WEB, "us-east-1", None, Allowed(OWN_ACCOUNT, ("own-any",))),
    ("two-policies-same-account", [OWN_ANY, OWN_ANY_TAGGED], LABELS_A, NAME_WEB, "us-east-1", None, Allowed(OWN_ACCOUNT, ("own-any",))),
    ("two-policies-same-account-with-tags", [OWN_ANY, OWN_ANY_TAGGED], LABELS_A, NAME_WEB, "us-east-1", {"": {"env": "prod"}},
     Allowed(OWN_ACCOUNT, ("own-any", "own-tagged"))),
    ("tag-lists-every-policy", [OWN_ANY_TAGGED, TEAM_A], LABELS_A, NAME_WEB, "us-east-1", {"": {}, ROLE_A.key: {}},
     (Rule.INSTANCE_TAGS, "lacks tag `env=prod` required by InstanceProfilePolicy own-tagged; the instance lacks tag `team=a` required by InstanceProfilePolicy team-a")),
    ("tags-asked-in-every-account-that-matters", [OWN_ANY_TAGGED, TEAM_A], LABELS_A, NAME_WEB, "us-east-1", None,
     NeedsInstanceTags((OWN_ACCOUNT, ROLE_A))),
    ("several-missing-tags", [policy("two", instanceTags={"team": "a", "env": "prod"})], {}, NAME_WEB, "us-east-1", {"": {"team": "a"}},
     (Rule.INSTANCE_TAGS, "lacks tag `env=prod` required")),
]


@pytest.mark.parametrize("policies,labels,profile,region,tags,expected", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_evaluate(policies, labels, profile, region, tags, expected):
    verdict = evaluate(policies, "ns", labels, profile, region, tags)
    if isinstance(expected, tuple):
        rule, fragment = expected
        assert isinstance(verdict, Denied) and verdict.rule is rule, verdict
        assert fragment in verdict.message
    else:
        assert verdict == expected


# -- evaluation: properties ----------------------------------------------------------------

ROLES = st.sampled_from([OWN_ACCOUNT, ROLE_A, ROLE_B])
PATTERNS = st.builds(ProfilePattern, st.sampled_from(["*", "web*", "*db", "web", "arn:*", "*/team-a/*"]), st.booleans())
POLICIES = st.builds(
    Policy,
    name=st.text(alphabet="abcdef", min_size=1, max_size=4),
    selector=st.builds(lambda labels: Selector(tuple(sorted(labels.items()))), st.dictionaries(KEYS, VALUES, max_size=1)),
    profiles=st.lists(PATTERNS, min_size=1, max_size=3).map(tuple),
    instance_tags=st.dictionaries(KEYS, VALUES, max_size=1).map(lambda d: tuple(sorted(d.items()))),
    regions=st.none() | st.sampled_from([frozenset({"us-east-1"}), frozenset({"eu-west-1", "us-east-1"}), frozenset({"eu-west-1"})]),
    account=ROLES,
)
PROFILES = st.one_of(
    st.builds(lambda n: ProfileRef(name=n), st.sampled_from(["web", "webdb", "db", "x"])),
    st.builds(lambda p: ProfileRef(arn=f"arn:aws:iam::{A}:instance-profile/{p}"), st.sampled_from(["web", "team-a/web", "team-a/db"])),
)
REGIONS = st.sampled_from(["us-east-1", "eu-west-1"])
ALL_TAGS = st.fixed_dictionaries({key.key: st.dictionaries(KEYS, VALUES) for key in (OWN_ACCOUNT, ROLE_A, ROLE_B)})


@given(st.lists(POLICIES, max_size=4), LABELS, PROFILES, REGIONS, ALL_TAGS)
def test_tags_are_asked_only_when_they_matter(policies, labels, profile, region, tags):
    """Without tags: either the final verdict, or a request for the tags of exactly the accounts
    whose tagged policies are still open; answering it gives the final verdict."""
    final = evaluate(policies, "ns", labels, profile, region, tags)
    assert not isinstance(final, NeedsInstanceTags)
    first = evaluate(policies, "ns", labels, profile, region)
    if isinstance(first, NeedsInstanceTags):
        answered = {account.key: tags[account.key] for account in first.accounts}
        assert evaluate(policies, "ns", labels, profile, region, answered) == final
    elif isinstance(first, Allowed):
        assert isinstance(final, Allowed) and final.account == first.account
    else:
        assert first == final


@given(st.lists(POLICIES, max_size=4), LABELS, PROFILES, REGIONS, ALL_TAGS)
def test_names_and_arns_never_cross(policies, labels, profile, region, tags):
    only_other_kind = [p for p in policies if all(pattern.by_arn != (profile.arn is not None) for pattern in p.profiles)]
    verdict = evaluate(only_other_kind, "ns", labels, profile, region, tags)
    assert isinstance(verdict, Denied) and verdict.rule in (Rule.NO_POLICY, Rule.PROFILE)


@given(st.lists(POLICIES, max_size=3), POLICIES, LABELS, PROFILES, REGIONS, ALL_TAGS)
def test_another_policy_never_takes_an_allowance_away_except_by_ambiguity(policies, extra, labels, profile, region, tags):
    before = evaluate(policies, "ns", labels, profile, region, tags)
    after = evaluate([*policies, extra], "ns", labels, profile, region, tags)
    if isinstance(before, Allowed):
        assert isinstance(after, Allowed) and after.account == before.account or (
            isinstance(after, Denied) and after.rule is Rule.AMBIGUOUS_ACCOUNT and extra.account != before.account
        )


@given(st.lists(POLICIES, max_size=4), LABELS, PROFILES, REGIONS, ALL_TAGS)
def test_allowed_means_some_policy_allows_everything(policies, labels, profile, region, tags):
    verdict = evaluate(policies, "ns", labels, profile, region, tags)
    allowing = [p for p in policies if p.selector.matches(labels) and p.allows_profile(profile) and p.allows_region(region)
                and not p.missing_tags(tags[p.account.key])]
    if isinstance(verdict, Allowed):
        assert sorted(p.name for p in allowing) == list(verdict.policies)
        assert {p.account for p in allowing} == {verdict.account}
    else:
        assert len({p.account for p in allowing}) != 1


# Policies are cluster-scoped: the book holds one per name, and evaluate() orders by name.
@given(st.lists(POLICIES, max_size=4, unique_by=lambda policy: policy.name), LABELS, PROFILES, REGIONS, ALL_TAGS)
def test_evaluation_does_not_depend_on_policy_order(policies, labels, profile, region, tags):
    assert evaluate(policies, "ns", labels, profile, region, tags) == evaluate(policies[::-1], "ns", labels, profile, region, tags)


ROTATED = Account(ROLE_A.role_arn, "rotated")
SOME_ROTATED = st.tuples(POLICIES, st.booleans()).map(
    lambda drawn: dataclasses.replace(drawn[0], account=ROTATED) if drawn[1] and drawn[0].account == ROLE_A else drawn[0])


@given(st.lists(SOME_ROTATED, max_size=4), LABELS, PROFILES, REGIONS, ALL_TAGS)
def test_a_role_is_only_ever_assumed_with_the_one_external_id_every_policy_gives_it(policies, labels, profile, region, tags):
    verdict = evaluate(policies, "ns", labels, profile, region, tags)
    if isinstance(verdict, Allowed) and verdict.account.role_arn:
        assert {p.account.external_id for p in policies if p.account.role_arn == verdict.account.role_arn} == {
            verdict.account.external_id}
