"""Plain values the decision core works on: what a binding wants and what EC2 has."""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from .api import FINALIZER


class InvalidSpec(ValueError):
    """A spec the CRD schema should have rejected (an old CRD, or admission bypassed)."""


class InstanceState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    NOT_FOUND = "not-found"
    UNKNOWN = "unknown"  # not looked up: the decision did not need it yet


class AssociationState(str, enum.Enum):
    ASSOCIATING = "associating"
    ASSOCIATED = "associated"
    DISASSOCIATING = "disassociating"
    DISASSOCIATED = "disassociated"


@dataclass(frozen=True, slots=True)
class ProfileRef:
    """The declared instance profile: exactly one of an ARN or a name."""

    arn: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if bool(self.arn) == bool(self.name):
            raise InvalidSpec("iamInstanceProfile takes exactly one of arn or name")

    @property
    def display(self) -> str:
        return self.arn or self.name or ""

    def matches(self, arn: str) -> bool:
        """Whether an associated profile ARN is this profile (names are unique per account)."""
        if self.arn is not None:
            return arn == self.arn
        return arn.rsplit("/", 1)[-1] == self.name

    def as_request(self) -> dict[str, str]:
        return {"Arn": self.arn} if self.arn else {"Name": self.name}


@dataclass(frozen=True, slots=True)
class Account:
    """Where a binding acts: through ``role_arn`` (assumed with STS), or "" for the operator's
    own credentials."""

    role_arn: str = ""
    external_id: str = ""

    @property
    def key(self) -> str:
        """The role ARN, "" for the operator's own credentials."""
        return self.role_arn

    @property
    def display(self) -> str:
        return f"role {self.role_arn}" if self.role_arn else "the operator's own credentials"


OWN_ACCOUNT = Account()


@dataclass(frozen=True, slots=True)
class Target:
    """One EC2 instance, identified across accounts and regions. ``account`` is the role ARN the
    operator acts through ("" for its own credentials): ``Account.key``."""

    region: str
    instance_id: str
    account: str = ""

    @property
    def place(self) -> "Place":
        return (self.account, self.region)


Place = tuple[str, str]  # an account (role ARN, "" for the operator's own) and a region


@dataclass(frozen=True, slots=True)
class Instance:
    """What DescribeInstances tells of one instance: its state and its tags."""

    state: InstanceState
    tags: Mapping[str, str]


MISSING_INSTANCE = Instance(InstanceState.NOT_FOUND, {})


@dataclass(frozen=True, slots=True)
class Desired:
    target: Target
    profile: ProfileRef
    retain: bool


@dataclass(frozen=True, slots=True)
class Association:
    """An IAM instance profile association as EC2 reports it."""

    association_id: str
    instance_id: str
    profile_arn: str
    profile_id: str
    state: AssociationState
    timestamp: datetime | None = None

    @classmethod
    def from_aws(cls, item: Mapping[str, Any]) -> "Association":
        profile = item.get("IamInstanceProfile") or {}
        return cls(
            association_id=item["AssociationId"],
            instance_id=item["InstanceId"],
            profile_arn=profile.get("Arn", ""),
            profile_id=profile.get("Id", ""),
            state=AssociationState(item.get("State", "associated")),
            timestamp=item.get("Timestamp"),
        )


def interned(value: Any) -> Any:
    """A copy of a JSON value whose strings are interned: thousands of bindings share one copy of
    each key, reason, region, ARN and timestamp instead of each holding its own."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, Mapping):
        return {sys.intern(k): interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interned(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Binding:
    """What the operator keeps of an InstanceProfileBinding between watch events."""

    namespace: str
    name: str
    uid: str
    generation: int
    created: str
    deleting: bool
    finalized: bool  # our finalizer is on the object: EC2 may be changed
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def precedence(self) -> tuple[str, bool, str, str]:
        """Earlier bindings of an instance win over later ones. creationTimestamp has one-second
        resolution: within a second, the one already managing an association keeps it."""
        return (self.created, not self.status.get("associationId"), self.namespace, self.name)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "Binding":
        meta = body.get("metadata", {})
        return cls(
            namespace=sys.intern(meta.get("namespace", "")),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation", 0)),
            created=meta.get("creationTimestamp", ""),
            deleting=bool(meta.get("deletionTimestamp")),
            finalized=FINALIZER in (meta.get("finalizers") or []),
            spec=interned(body.get("spec") or {}),
            status=interned(body.get("status") or {}),
        )

    def desired(self, default_region: str) -> Desired:
        """The spec as a decision input; raises InvalidSpec for what admission should have caught."""
        instance_id = self.spec.get("instanceId")
        if not isinstance(instance_id, str) or not instance_id.startswith("i-"):
            raise InvalidSpec(f"spec.instanceId {instance_id!r} is not an EC2 instance ID")
        profile = self.spec.get("iamInstanceProfile")
        if not isinstance(profile, Mapping):
            raise InvalidSpec("spec.iamInstanceProfile must be an object with arn or name")
        return Desired(
            target=Target(self.spec.get("region") or default_region, instance_id),
            profile=ProfileRef(arn=profile.get("arn"), name=profile.get("name")),
            retain=self.spec.get("deletionPolicy") == "Retain",
        )
