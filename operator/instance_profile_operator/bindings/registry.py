"""The bindings the operator knows of, fed by the watch, indexed by the instance they name.

It answers who owns an instance when several bindings name it (the earliest created of those
that their policies admit wins; the others report ``Conflict`` and make no EC2 call), and which
instances the periodic resync has to describe. An instance is identified by account, region and ID: a binding's
account is what its allowing policy decided (``place``), else what its status recorded.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Callable, Iterable

from ..core.model import Binding, InvalidSpec, Place, Target, interned

Key = tuple[str, str]


class Registry:
    def __init__(self, default_region: str):
        self.default_region = default_region
        self._bindings: dict[Key, Binding] = {}
        self._targets: dict[Key, Target] = {}
        self._by_target: dict[Target, tuple[Key, ...]] = {}  # a tuple: one key, as a rule
        self._accounts: dict[Key, str] = {}  # decided by policy at the last reconcile
        self._denied: set[Key] = set()  # denied at the last reconcile

    def __len__(self) -> int:
        return len(self._bindings)

    def get(self, key: Key) -> Binding | None:
        return self._bindings.get(key)

    def target(self, binding: Binding) -> Target | None:
        try:
            target = binding.desired(self.default_region).target
        except InvalidSpec:
            return None
        account = self._accounts.get(binding.key, binding.status.get("roleArn") or "")
        return dataclasses.replace(target, account=account)

    def place(self, key: Key, account: str) -> None:
        """Record the account a binding acts in (its policy decides), and index it there."""
        self._denied.discard(key)
        if self._accounts.get(key) != account:
            self._accounts[key] = account
            binding = self._bindings.get(key)
            if binding is not None:
                self._index(binding)

    def deny(self, key: Key) -> None:
        """The binding's policies deny it: it acts nowhere, and resyncs describe nothing for it."""
        self._denied.add(key)
        if self._accounts.pop(key, None) is not None and key in self._bindings:
            self._index(self._bindings[key])

    def upsert(self, binding: Binding) -> bool:
        """Remember ``binding``; True when it needs reconciling (new, spec or lifecycle changed),
        False for a change of status alone."""
        before = self._bindings.get(binding.key)
        self._bindings[binding.key] = binding
        self._index(binding)
        return before is None or (before.generation, before.deleting, before.finalized, before.uid) != (
            binding.generation, binding.deleting, binding.finalized, binding.uid,
        )

    def _index(self, binding: Binding) -> None:
        target = self.target(binding)
        self._unindex(binding.key)
        if target is not None:
            self._targets[binding.key] = target
            self._by_target[target] = (*self._by_target.get(target, ()), binding.key)

    def _unindex(self, key: Key) -> tuple[Key, ...]:
        """Drop ``key`` from the index; return the other keys of its target."""
        target = self._targets.pop(key, None)
        if target is None:
            return ()
        others = tuple(k for k in self._by_target[target] if k != key)
        if others:
            self._by_target[target] = others
        else:
            del self._by_target[target]
        return others

    def remember_status(self, key: Key, status: dict) -> None:
        """Our own write, known before its watch event arrives."""
        binding = self._bindings.get(key)
        if binding is not None:
            merged = interned({k: v for k, v in {**binding.status, **status}.items() if v is not None})
            self._bindings[key] = dataclasses.replace(binding, status=merged)

    def remove(self, key: Key) -> list[Key]:
        """Forget a deleted binding; return the bindings that named the same instance."""
        self._bindings.pop(key, None)
        self._accounts.pop(key, None)
        self._denied.discard(key)
        return sorted(self._unindex(key))

    def owner(self, target: Target, eligible: Callable[[Binding], bool] = lambda binding: True) -> Binding | None:
        """The first (by precedence) of the ``eligible`` bindings that name ``target``: only a
        binding that its policies admit there may own an instance (the caller decides)."""
        contenders = [self._bindings[k] for k in self._by_target.get(target, ()) if eligible(self._bindings[k])]
        return min(contenders, key=lambda b: b.precedence) if contenders else None

    def rivals(self, key: Key) -> list[Binding]:
        """The other bindings that name the instance ``key`` names."""
        target = self._targets.get(key)
        return [self._bindings[k] for k in self._by_target.get(target, ()) if k != key] if target else []

    def keys(self) -> list[Key]:
        return list(self._bindings)

    def instances_by_place(self, keys: Iterable[Key] | None = None) -> dict[Place, list[str]]:
        """Every instance a live binding (of ``keys``, or all) acts on, grouped by account and region:
        what a resync describes. A binding acts once admitted; until its first reconcile here, if its
        status records an association. A denied one costs no EC2 call of any kind."""
        places: dict[Place, set[str]] = defaultdict(set)
        for key in self._bindings if keys is None else keys:
            binding, target = self._bindings.get(key), self._targets.get(key)
            if binding is None or target is None or binding.deleting:
                continue
            if key in self._accounts or (key not in self._denied and binding.status.get("associationId")):
                places[target.place].add(target.instance_id)
        return {place: sorted(ids) for place, ids in places.items()}
