"""The membership core of an InstanceProfileBindingSet: matching instances + existing children →
the children to create, to put back, and to delete.

Pure functions, no I/O. A child is an ordinary InstanceProfileBinding named after its set and
its instance; its spec is the set's profile, region and deletionPolicy and its instanceId.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping

from .api import API_VERSION, FINALIZER, KIND, SET_KIND, SET_LABEL

# Kubernetes object names are DNS subdomains (≤ 253) but labels are ≤ 63 characters; children
# carry their set's name in a label value, so names are kept within 63 as well.
NAME_LIMIT = 63
INSTANCE_ID_LENGTH = 19  # "i-" + 17 hexadecimal digits, the longest instance ID


@dataclass(frozen=True)
class ChildSpec:
    """What a set declares for each of its instances: the spec of every child binding."""

    profile: tuple[tuple[str, str], ...]  # ("name", "web") or ("arn", "arn:...")
    region: str | None
    deletion_policy: str

    def for_instance(self, instance_id: str) -> dict:
        """The child binding's spec for one instance."""
        spec: dict = {"instanceId": instance_id, "iamInstanceProfile": dict(self.profile),
                      "deletionPolicy": self.deletion_policy}
        if self.region is not None:
            spec["region"] = self.region
        return spec


@dataclass(frozen=True)
class Plan:
    """The writes that bring the children in line with EC2 and the set's spec.

    ``create`` and ``delete`` are instance IDs; ``update`` maps a child's name to the spec it
    must have again (its profile changed, or someone edited it by hand).
    """

    create: tuple[str, ...]
    update: tuple[tuple[str, dict], ...]
    delete: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def child_name(set_name: str, instance_id: str) -> str:
    """A deterministic, valid name for the set's child of one instance: ``<set>-<instance id>``,
    the set's name shortened with a hash of it when the whole would exceed 63 characters."""
    suffix = instance_id.lower()
    room = NAME_LIMIT - len(suffix) - 1
    if len(set_name) <= room:
        return f"{set_name}-{suffix}"
    digest = hashlib.sha256(set_name.encode()).hexdigest()[:8]
    head = set_name[: max(room - len(digest) - 1, 0)].rstrip("-.")
    return f"{head}-{digest}-{suffix}" if head else f"{digest}-{suffix}"


def plan(matching: Iterable[str], children: Mapping[str, Mapping], declared: ChildSpec) -> Plan:
    """Compare the instances EC2 lists as matching with the set's children (instance ID → the
    child's spec) and say what to write. Instances are sorted so that the plan is deterministic.

    A binding's region cannot be changed, so a child whose region differs from the set's is
    deleted, and made again by a later pass once it is gone.
    """
    wanted = set(matching)
    have = set(children)
    stale_region = {i for i in wanted & have if children[i].get("region") != declared.region}
    create = tuple(sorted(wanted - have))
    delete = tuple(sorted((have - wanted) | stale_region))
    update = tuple(
        (instance_id, declared.for_instance(instance_id))
        for instance_id in sorted(wanted & have - stale_region)
        if _differs(children[instance_id], declared.for_instance(instance_id))
    )
    return Plan(create=create, update=update, delete=delete)


def _differs(actual: Mapping, wanted: Mapping) -> bool:
    return any(actual.get(key) != value for key, value in wanted.items())


def child_body(namespace: str, set_name: str, set_uid: str, instance_id: str, declared: ChildSpec) -> dict:
    """A new child binding: named after its set and instance, labelled with the set's name, owned
    by the set (controller; blockOwnerDeletion so that a foreground deletion of the set waits), and
    finalized from birth (its reconcile need not wait for the finalizer's own write and watch event)."""
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {
            "name": child_name(set_name, instance_id), "namespace": namespace,
            "labels": {SET_LABEL: set_name},
            "finalizers": [FINALIZER],
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": SET_KIND, "name": set_name, "uid": set_uid,
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": declared.for_instance(instance_id),
    }


def controller_uid(body: Mapping) -> str | None:
    """The UID of the object that controls ``body`` (its ownerReference with controller: true)."""
    for owner in (body.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller") and owner.get("kind") == SET_KIND:
            return owner.get("uid")
    return None
