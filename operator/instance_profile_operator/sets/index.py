"""What the set controller knows between watch events: the sets, and each set's children."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..core.api import SET_LABEL
from ..core.membership import controller_uid

SetKey = tuple[str, str]  # (namespace, set name)


@dataclass(frozen=True)
class ChildRecord:
    name: str
    uid: str
    owner_uid: str
    generation: int
    deleting: bool
    spec: Mapping[str, Any]
    status: Mapping[str, Any]


class SetIndex:
    def __init__(self) -> None:
        self.sets: dict[SetKey, Mapping[str, Any]] = {}
        self._children: dict[SetKey, dict[str, ChildRecord]] = {}  # set -> child name -> child

    def on_set(self, event_type: str | None, body: Mapping[str, Any]) -> SetKey:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED":
            self.sets.pop(key, None)
        else:
            self.sets[key] = body
        return key

    def on_child(self, event_type: str | None, body: Mapping[str, Any]) -> SetKey | None:
        """Record a binding labelled with a set's name; the set's key, None for other bindings. (A
        deletion seen only by a binding's absence from a listing comes with its name alone.)"""
        meta = body["metadata"]
        set_name = (meta.get("labels") or {}).get(SET_LABEL) or (
            self._set_of(meta["namespace"], meta["name"]) if event_type == "DELETED" else None)
        if not set_name:
            return None
        key = (meta["namespace"], set_name)
        children = self._children.setdefault(key, {})
        if event_type == "DELETED":
            children.pop(meta["name"], None)
            if not children:
                del self._children[key]
        else:
            children[meta["name"]] = ChildRecord(
                name=meta["name"], uid=meta.get("uid", ""), owner_uid=controller_uid(body) or "",
                generation=int(meta.get("generation", 0)), deleting=bool(meta.get("deletionTimestamp")),
                spec=body.get("spec") or {}, status=body.get("status") or {})
        return key

    def _set_of(self, namespace: str, child: str) -> str | None:
        return next((name for (ns, name), children in self._children.items() if ns == namespace and child in children), None)

    def children(self, key: SetKey, owner_uid: str) -> list[ChildRecord]:
        """The set's children: labelled with its name and controlled by this set (its UID)."""
        return [c for c in self._children.get(key, {}).values() if c.owner_uid == owner_uid]
