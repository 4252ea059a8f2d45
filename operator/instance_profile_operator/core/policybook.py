"""The policies and namespace labels the operator knows of, fed by their watches.

It evaluates bindings against what it has seen and tells which namespaces a watch event
affects, so that only their bindings are re-evaluated. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Union

from .model import ProfileRef
from .policy import InstanceTags, InvalidPolicy, Policy, Verdict, evaluate, parse_policy


@dataclass(frozen=True)
class NamespaceNotSeen:
    """The namespace watch has not delivered this namespace yet: nothing can be decided, and its
    arrival (``on_namespace``) names it for re-evaluation."""

    namespace: str


BookVerdict = Union[Verdict, NamespaceNotSeen]


def _name(body: Mapping[str, Any]) -> str:
    return (body.get("metadata") or {}).get("name") or ""


class PolicyBook:
    def __init__(self) -> None:
        self._policies: dict[str, Policy] = {}
        self._labels: dict[str, Mapping[str, str]] = {}
        self.invalid: dict[str, str] = {}  # policy name -> why it is ignored (it allows nothing)

    @property
    def policies(self) -> list[Policy]:
        return list(self._policies.values())

    def labels(self, namespace: str) -> Mapping[str, str] | None:
        return self._labels.get(namespace)

    def _selected(self, policy: Policy | None) -> set[str]:
        if policy is None:
            return set()
        return {namespace for namespace, labels in self._labels.items() if policy.selector.matches(labels)}

    def on_policy(self, event_type: str | None, body: Mapping[str, Any]) -> set[str]:
        """Record a policy watch event; return the namespaces whose bindings it may affect."""
        name = _name(body)
        before = self._policies.pop(name, None)
        self.invalid.pop(name, None)
        if event_type != "DELETED":
            try:
                self._policies[name] = parse_policy(body)
            except InvalidPolicy as error:
                self.invalid[name] = str(error)
        after = self._policies.get(name)
        if after == before:
            return set()
        # Policies naming the same role are judged together (one external ID per role): theirs too.
        roles = {policy.account.role_arn for policy in (before, after) if policy is not None and policy.account.role_arn}
        sharing = [policy for policy in self._policies.values() if policy.account.role_arn in roles]
        return set().union(*(self._selected(policy) for policy in (before, after, *sharing)))

    def on_namespace(self, event_type: str | None, body: Mapping[str, Any]) -> set[str]:
        """Record a namespace watch event; return {namespace} when the policies selecting it changed
        (or it is new), else nothing."""
        name = _name(body)
        if event_type == "DELETED":
            self._labels.pop(name, None)
            return set()
        labels = dict((body.get("metadata") or {}).get("labels") or {})
        before = self._labels.get(name)
        self._labels[name] = labels
        if before is not None and self._selecting(before) == self._selecting(labels):
            return set()
        return {name}

    def _selecting(self, labels: Mapping[str, str]) -> set[str]:
        return {name for name, policy in self._policies.items() if policy.selector.matches(labels)}

    def evaluate(self, namespace: str, profile: ProfileRef, region: str, tags: InstanceTags | None = None) -> BookVerdict:
        labels = self._labels.get(namespace)
        if labels is None:
            return NamespaceNotSeen(namespace)
        return evaluate(self._policies.values(), namespace, labels, profile, region, tags)
