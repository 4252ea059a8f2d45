"""docs/install-eks.md: every JSON document is an IAM policy by the grammar, and the operator's
policy grants every EC2 action the operator calls."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

from instance_profile_operator.aws.apimodel import EC2_OPERATIONS, STS_OPERATIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "install-eks.md"
BLOCK = re.compile(r"(?:<!-- iam: (?P<kind>[\w-]+) -->\n)?```json\n(?P<body>.*?)```", re.S)
STATEMENT_KEYS = {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition"}
# IAM's condition operators, each also with IfExists; ForAllValues:/ForAnyValue: prefixes; Null alone
OPERATORS = {"StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "StringLike",
             "StringNotLike", "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals",
             "NumericGreaterThan", "NumericGreaterThanEquals", "DateEquals", "DateNotEquals", "DateLessThan",
             "DateLessThanEquals", "DateGreaterThan", "DateGreaterThanEquals", "Bool", "BinaryEquals", "IpAddress",
             "NotIpAddress", "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike"}
ACTION = re.compile(r"^(\*|[a-z0-9-]+:[A-Za-z0-9*?]+)$")


def documents() -> list[tuple[str, dict]]:
    found = [(m["kind"] or "", m["body"]) for m in BLOCK.finditer(DOC.read_text())]
    assert found, "no JSON documents in docs/install-eks.md"
    return [(kind, json.loads(body)) for kind, body in found]


def strings(value) -> list[str]:
    assert isinstance(value, (str, list)) and value, value
    items = [value] if isinstance(value, str) else value
    assert all(isinstance(item, str) and item for item in items), value
    return items


def valid_operator(name: str) -> bool:
    name = name.removeprefix("ForAllValues:").removeprefix("ForAnyValue:")
    return name == "Null" or name.removesuffix("IfExists") in OPERATORS


def check_policy(policy: dict, trust: bool) -> None:
    assert set(policy) <= {"Version", "Id", "Statement"} and policy.get("Version") == "2012-10-17", policy
    statements = policy["Statement"]
    statements = [statements] if isinstance(statements, dict) else statements
    assert isinstance(statements, list) and statements
    sids = [s["Sid"] for s in statements if "Sid" in s]
    assert len(sids) == len(set(sids)) and all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids), sids
    for statement in statements:
        assert set(statement) <= STATEMENT_KEYS, statement
        assert statement["Effect"] in ("Allow", "Deny")
        assert ("Action" in statement) != ("NotAction" in statement), statement
        assert all(ACTION.match(a) for a in strings(statement.get("Action") or statement.get("NotAction")))
        if trust:  # a role's trust policy: a principal, no resource
            assert ("Principal" in statement) != ("NotPrincipal" in statement) and "Resource" not in statement, statement
            principal = statement.get("Principal") or statement["NotPrincipal"]
            assert principal == "*" or (set(principal) <= {"AWS", "Federated", "Service", "CanonicalUser"}
                                        and all(strings(v) for v in principal.values())), principal
        else:  # an identity policy: a resource, no principal
            assert ("Resource" in statement) != ("NotResource" in statement) and "Principal" not in statement, statement
            for resource in strings(statement.get("Resource") or statement.get("NotResource")):
                assert resource == "*" or resource.startswith("arn:aws"), resource
        for operator, tests in (statement.get("Condition") or {}).items():
            assert valid_operator(operator), operator
            assert isinstance(tests, dict) and tests, tests
            for key, values in tests.items():
                assert re.fullmatch(r"[A-Za-z0-9.:/_-]+", key), key
                assert values == [] or all(isinstance(v, (str, bool, int)) for v in ([values] if not isinstance(values, list) else values))


@pytest.mark.parametrize(("kind", "policy"), documents(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_json_document_is_an_iam_policy(kind, policy):
    assert kind in ("operator-policy", "permissions", "trust"), f"mark each block <!-- iam: KIND -->, not {kind!r}"
    check_policy(policy, trust=kind == "trust")


def allowed(policy: dict, action: str) -> bool:
    return any(s["Effect"] == "Allow" and any(fnmatch.fnmatchcase(action, a) for a in strings(s.get("Action", [])))
               for s in policy["Statement"])


def test_the_operator_policy_grants_every_call_the_operator_makes():
    [policy] = [policy for kind, policy in documents() if kind == "operator-policy"]
    for operation in EC2_OPERATIONS:
        assert allowed(policy, f"ec2:{operation}"), operation
    for operation in STS_OPERATIONS:
        assert allowed(policy, f"sts:{operation}"), operation
    [pass_role] = [s for s in policy["Statement"] if s.get("Action") == "iam:PassRole"]
    assert pass_role["Resource"] != "*" and pass_role["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


@pytest.mark.parametrize(("policy", "trust"), [
    ({"Version": "2012-10-17", "Statement": [{"Effect": "Permit", "Action": "ec2:X", "Resource": "*"}]}, False),
    ({"Version": "2008-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:X", "Resource": "*"}]}, False),
    ({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:X"}]}, False),
    ({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:X", "Resource": "*",
                                              "Condition": {"StringEqual": {"a:b": "c"}}}]}, False),
    ({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}, True),
])
def test_the_check_refuses_what_iam_refuses(policy, trust):
    with pytest.raises((AssertionError, KeyError)):
        check_policy(policy, trust)
