"""Which deletions are uninstalls: the bindings' CRD going, or for a set's child the sets' CRD."""

from __future__ import annotations

import pytest

from instance_profile_operator.bindings.uninstall import MESSAGE, SET_MESSAGE, uninstall_reason
from instance_profile_operator.core.api import CRD_NAME, SET_CRD_NAME


class Writer:
    def __init__(self, *deleting: str):
        self.deleting = set(deleting)

    async def crd_deleting(self, name: str = CRD_NAME) -> bool:
        return name in self.deleting


PLAIN = {"metadata": {"name": "web", "namespace": "team"}}
CHILD = {"metadata": {"name": "web-i-1", "namespace": "team", "ownerReferences": [
    {"kind": "InstanceProfileBindingSet", "name": "web", "uid": "set-uid", "controller": True}]}}


@pytest.mark.parametrize("deleting, body, reason", [
    ((), PLAIN, None),
    ((), CHILD, None),  # a set deleted by its user: the child follows its deletionPolicy
    ((CRD_NAME,), PLAIN, MESSAGE),
    ((CRD_NAME, SET_CRD_NAME), CHILD, MESSAGE),
    ((SET_CRD_NAME,), CHILD, SET_MESSAGE),
    ((SET_CRD_NAME,), PLAIN, None),  # the sets' CRD takes no binding of the user's with it
])
async def test_uninstall_reason(deleting, body, reason):
    assert await uninstall_reason(Writer(*deleting), body) == reason
