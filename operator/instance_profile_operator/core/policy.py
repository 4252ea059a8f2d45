"""Tenancy rules: which InstanceProfilePolicies allow a binding, and in which AWS account.

Pure: policy bodies are parsed into frozen values (a malformed one raises ``InvalidPolicy``,
never anything else) and ``evaluate`` decides from values alone. Instance tags cost an EC2 call,
so ``evaluate`` is first asked without them; only when the outcome depends on them does it
answer ``NeedsInstanceTags``, naming the accounts in which to look the instance up, and the
caller asks again with the tags filled in (as ``decide`` does with ``LookUpInstance``).
See docs/tenancy.md for the rules in prose.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Union

from .model import OWN_ACCOUNT, Account, ProfileRef

DOCS = "docs/tenancy.md"
_ROLE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[!-~]{1,512}$")
_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


class InvalidPolicy(ValueError):
    """A policy body the CRD schema should have rejected (an old CRD, or validation bypassed)."""




def glob_matches(pattern: str, text: str) -> bool:
    """``*`` matches any run of characters, ``/`` included; every other character itself."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == text
    first, *middle, last = parts
    end = len(text) - len(last)
    if end < len(first) or not text.startswith(first) or not text.endswith(last):
        return False
    position = len(first)
    for part in middle:  # leftmost matches leave the most room for what follows
        found = text.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry of a LabelSelector."""

    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # NotIn


@dataclass(frozen=True)
class Selector:
    """A Kubernetes LabelSelector; the empty selector selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match_labels) and all(
            requirement.matches(labels) for requirement in self.requirements
        )


@dataclass(frozen=True)
class ProfilePattern:
    """One ``instanceProfiles`` entry: a glob on the full ARN, or on the name."""

    glob: str
    by_arn: bool

    def matches(self, profile: ProfileRef) -> bool:
        # A name says nothing about the profile's path: it never satisfies an ARN pattern.
        if self.by_arn:
            return profile.arn is not None and glob_matches(self.glob, profile.arn)
        return profile.name is not None and glob_matches(self.glob, profile.name)


@dataclass(frozen=True)
class Policy:
    name: str
    selector: Selector
    profiles: tuple[ProfilePattern, ...]
    instance_tags: tuple[tuple[str, str], ...] = ()  # sorted; empty: no tag required
    regions: frozenset[str] | None = None  # None: every region
    account: Account = OWN_ACCOUNT

    def allows_profile(self, profile: ProfileRef) -> bool:
        return any(pattern.matches(profile) for pattern in self.profiles)

    def allows_region(self, region: str) -> bool:
        return self.regions is None or region in self.regions

    def missing_tags(self, tags: Mapping[str, str]) -> list[str]:
        return [f"{key}={value}" for key, value in self.instance_tags if tags.get(key) != value]


# -- parsing -------------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidPolicy(f"{where} must be an object")
    return value


def _string_map(value: Any, where: str) -> dict[str, str]:
    items = dict(_mapping(value, where))
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in items.items()):
        raise InvalidPolicy(f"{where} must map strings to strings")
    return items


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidPolicy(f"{where} must be a list of strings")
    return value


def parse_selector(value: Any, where: str = "spec.namespaceSelector") -> Selector:
    body = _mapping(value, where)
    labels = _string_map(body.get("matchLabels") or {}, f"{where}.matchLabels")
    expressions = body.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise InvalidPolicy(f"{where}.matchExpressions must be a list")
    requirements = []
    for index, raw in enumerate(expressions):
        at = f"{where}.matchExpressions[{index}]"
        expression = _mapping(raw, at)
        key, operator = expression.get("key"), expression.get("operator")
        values = _strings(expression.get("values") or [], f"{at}.values")
        if not isinstance(key, str) or not key:
            raise InvalidPolicy(f"{at}.key is required")
        if operator not in _OPERATORS:
            raise InvalidPolicy(f"{at}.operator must be one of In, NotIn, Exists, DoesNotExist")
        if (operator in ("In", "NotIn")) != bool(values):
            raise InvalidPolicy(f"{at}: In and NotIn need values; Exists and DoesNotExist take none")
        requirements.append(Requirement(key, operator, frozenset(values)))
    return Selector(tuple(sorted(labels.items())), tuple(requirements))


def _parse_profiles(value: Any) -> tuple[ProfilePattern, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidPolicy("spec.instanceProfiles needs at least one entry")
    patterns = []
    for index, raw in enumerate(value):
        entry = _mapping(raw, f"spec.instanceProfiles[{index}]")
        arn, name = entry.get("arn"), entry.get("name")
        if (arn is None) == (name is None) or not isinstance(arn if arn is not None else name, str):
            raise InvalidPolicy(f"spec.instanceProfiles[{index}] takes exactly one of arn or name")
        patterns.append(ProfilePattern(arn if arn is not None else name, by_arn=arn is not None))
    return tuple(patterns)


def _parse_account(value: Any) -> Account:
    if value is None:
        return OWN_ACCOUNT
    body = _mapping(value, "spec.account")
    role_arn, external_id = body.get("roleArn"), body.get("externalId", "")
    if not isinstance(role_arn, str) or not _ROLE_ARN.match(role_arn):
        raise InvalidPolicy("spec.account.roleArn must be an IAM role ARN, e.g. arn:aws:iam::111122223333:role/name")
    if not isinstance(external_id, str):
        raise InvalidPolicy("spec.account.externalId must be a string")
    return Account(role_arn, external_id)


def parse_policy(body: Mapping[str, Any]) -> Policy:
    """An InstanceProfilePolicy object as a value; raises ``InvalidPolicy`` for a malformed one."""
    meta = body.get("metadata")
    name = str(meta.get("name") or "") if isinstance(meta, Mapping) else ""
    try:
        spec = _mapping(body.get("spec"), "spec")
        regions = spec.get("regions")
        return Policy(
            name=name,
            selector=parse_selector(spec.get("namespaceSelector")),
            profiles=_parse_profiles(spec.get("instanceProfiles")),
            instance_tags=tuple(sorted(_string_map(spec.get("instanceTags") or {}, "spec.instanceTags").items())),
            regions=None if regions is None else frozenset(_strings(regions, "spec.regions")),
            account=_parse_account(spec.get("account")),
        )
    except InvalidPolicy as error:
        raise InvalidPolicy(f"InstanceProfilePolicy {name}: {error}") from None


# -- evaluation ----------------------------------------------------------------------------


class Rule(enum.Enum):
    """The rule a denied binding failed."""

    NO_POLICY = "no-policy"
    PROFILE = "profile-not-allowed"
    REGION = "region-not-allowed"
    INSTANCE_TAGS = "instance-tags"
    AMBIGUOUS_ACCOUNT = "ambiguous-account"


@dataclass(frozen=True)
class Allowed:
    account: Account
    policies: tuple[str, ...]  # the allowing policies, sorted


@dataclass(frozen=True)
class Denied:
    rule: Rule
    message: str


@dataclass(frozen=True)
class NeedsInstanceTags:
    """The outcome depends on the instance's tags in these accounts: look them up (the instance
    as seen in each account; {} when it does not exist there) and evaluate again."""

    accounts: tuple[Account, ...]


Verdict = Union[Allowed, Denied, NeedsInstanceTags]
InstanceTags = Mapping[str, Mapping[str, str]]  # Account.key -> the instance's tags in that account


def _account_order(account: Account) -> tuple[str, str]:
    return (account.role_arn, account.external_id)


def _names(policies: Iterable[Policy]) -> str:
    return ", ".join(sorted(policy.name for policy in policies))


def _settled(allowing: list[Policy], everyone: list[Policy]) -> Verdict:
    accounts: dict[Account, list[Policy]] = {}
    for policy in sorted(allowing, key=lambda policy: policy.name):  # messages name the same policy whatever the order
        accounts.setdefault(policy.account, []).append(policy)
    if len(accounts) > 1:
        (first, one), (second, other) = sorted(accounts.items(), key=lambda item: _account_order(item[0]))[:2]
        return Denied(Rule.AMBIGUOUS_ACCOUNT, (
            f"ambiguous account: InstanceProfilePolicy {one[0].name} acts with {first.display}"
            f"{' (external ID set)' if first.external_id else ''} but {other[0].name} with {second.display}"
            f"{' (external ID set)' if second.external_id else ''}; make the policies that allow this binding agree"
        ))
    (account,) = accounts
    rivals = sorted(p.name for p in everyone if p.account.role_arn == account.role_arn != "" and p.account != account)
    if rivals:  # the operator could not tell which external ID to assume the role with
        return Denied(Rule.AMBIGUOUS_ACCOUNT, (
            f"ambiguous account: InstanceProfilePolicy {accounts[account][0].name} and {rivals[0]} name the same role "
            "with different external IDs; make the policies that name a role agree on its external ID"
        ))
    return Allowed(account, tuple(sorted(policy.name for policy in allowing)))


def evaluate(
    policies: Iterable[Policy],
    namespace: str,
    labels: Mapping[str, str],
    profile: ProfileRef,
    region: str,
    tags: InstanceTags | None = None,
) -> Verdict:
    """Whether a binding in ``namespace`` (with ``labels``) may attach ``profile`` in ``region``,
    and in which account. ``tags`` holds the instance's tags per account key, as far as known."""
    tags = tags or {}
    policies = list(policies)
    selecting = [policy for policy in policies if policy.selector.matches(labels)]
    if not selecting:
        return Denied(Rule.NO_POLICY, f"no InstanceProfilePolicy selects namespace {namespace}; see {DOCS}")
    by_profile = [policy for policy in selecting if policy.allows_profile(profile)]
    if not by_profile:
        return Denied(Rule.PROFILE, (
            f"instance profile {profile.display} is not allowed in namespace {namespace} "
            f"(InstanceProfilePolicy {_names(selecting)})"
        ))
    matched = [policy for policy in by_profile if policy.allows_region(region)]
    if not matched:
        return Denied(Rule.REGION, (
            f"region {region} is not allowed for instance profile {profile.display} "
            f"(InstanceProfilePolicy {_names(by_profile)})"
        ))
    pending = [p for p in matched if p.instance_tags and p.account.key not in tags]
    known = [p for p in matched if not p.instance_tags or (p.account.key in tags and not p.missing_tags(tags[p.account.key]))]
    if pending:
        settled = _settled(known, policies) if known else None
        # Tags can only add allowing policies: a decided ambiguity stays, and policies of the
        # account already allowed change nothing.
        if settled is None or (isinstance(settled, Allowed) and any(p.account != settled.account for p in pending)):
            return NeedsInstanceTags(tuple(sorted({p.account for p in pending}, key=_account_order)))
        return settled
    if not known:
        lacking = "; ".join(
            f"the instance lacks tag {', '.join(f'`{tag}`' for tag in policy.missing_tags(tags[policy.account.key]))} "
            f"required by InstanceProfilePolicy {policy.name}"
            for policy in sorted(matched, key=lambda p: p.name)
        )
        return Denied(Rule.INSTANCE_TAGS, lacking)
    return _settled(known, policies)
