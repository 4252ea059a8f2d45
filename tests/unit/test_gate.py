"""The gate: admission with the instance tags it hangs on, and ownership among admitted bindings only."""

from __future__ import annotations

import pytest

from instance_profile_operator.core.faults import AwsFault, FaultKind
from instance_profile_operator.bindings.gate import Gate
from instance_profile_operator.core.model import MISSING_INSTANCE, Binding, Instance, InstanceState, Target
from instance_profile_operator.core.policy import Denied
from instance_profile_operator.bindings.registry import Registry
from instance_profile_operator.core.tenancy import Admitted, Tenancy

REGION = "us-east-1"
INSTANCE = "i-0123456789abcdef0"
TARGET = Target(REGION, INSTANCE)


class Instances:
    """The observer's instance lookups: tags per instance, or a fault; counts the lookups."""

    def __init__(self, answer: Instance | AwsFault):
        self.answer = answer
        self.lookups = 0

    async def instance(self, target: Target) -> Instance:
        self.lookups += 1
        if isinstance(self.answer, AwsFault):
            raise self.answer
        return self.answer


def binding(name: str, namespace: str, created: str) -> Binding:
    spec = {"instanceId": INSTANCE, "iamInstanceProfile": {"name": "web"}}
    return Binding(namespace, name, f"uid-{name}", 1, created, False, True, spec, {})


def tenancy(tags: dict | None = None) -> Tenancy:
    tenancy = Tenancy(enforcing=True)
    for name, team in (("team-a", "a"), ("squat", None)):
        tenancy.book.on_namespace(None, {"metadata": {"name": name, "labels": {"team": team} if team else {}}})
    spec = {"namespaceSelector": {"matchLabels": {"team": "a"}}, "instanceProfiles": [{"name": "web"}]}
    tenancy.book.on_policy(None, {"metadata": {"name": "team-a"}, "spec": {**spec, **({"instanceTags": tags} if tags else {})}})
    return tenancy


def gate(*bindings: Binding, tags: dict | None = None, instance: Instance | AwsFault = MISSING_INSTANCE) -> tuple[Gate, Instances]:
    registry = Registry(REGION)
    for b in bindings:
        registry.upsert(b)
    instances = Instances(instance)
    return Gate(tenancy(tags), instances, registry), instances


async def test_a_denied_binding_created_first_does_not_own_the_instance():
    squatter, legit = binding("squat", "squat", "2025-01-01T00:00:00Z"), binding("web", "team-a", "2025-01-02T00:00:00Z")
    the_gate, instances = gate(squatter, legit)
    assert await the_gate.owner(legit, TARGET) == legit
    assert instances.lookups == 0  # decided without tags


async def test_an_admitted_binding_created_first_owns_it():
    first, second = binding("first", "team-a", "2025-01-01T00:00:00Z"), binding("second", "team-a", "2025-01-02T00:00:00Z")
    the_gate, _ = gate(first, second)
    assert await the_gate.owner(second, TARGET) == first


@pytest.mark.parametrize("tags,owner", [({"team": "a"}, "first"), ({"team": "b"}, "second")])
async def test_a_rival_whose_admission_hangs_on_tags_owns_only_if_the_tags_admit_it(tags, owner):
    first, second = binding("first", "team-a", "2025-01-01T00:00:00Z"), binding("second", "team-a", "2025-01-02T00:00:00Z")
    the_gate, instances = gate(first, second, tags={"team": "a"}, instance=Instance(InstanceState.RUNNING, tags))
    assert (await the_gate.owner(second, TARGET)).name == owner
    assert instances.lookups == 1  # one look for all rivals: the same instance


async def test_a_missing_instance_reads_as_one_without_the_tags():
    legit = binding("web", "team-a", "2025-01-01T00:00:00Z")
    verdicts = []
    for answer in (MISSING_INSTANCE, Instance(InstanceState.RUNNING, {"team": "b"}),
                   AwsFault(FaultKind.INSTANCE_NOT_FOUND, "InvalidInstanceID.NotFound", "no such instance")):
        the_gate, _ = gate(legit, tags={"team": "a"}, instance=answer)
        admission = await the_gate.admit(legit, legit.desired(REGION))
        assert isinstance(admission, Admitted) and admission.tags_pending
        denial, _ = await the_gate.check_tags(legit, admission)
        verdicts.append(denial)
    assert all(isinstance(v, Denied) for v in verdicts) and len(set(verdicts)) == 1  # no existence oracle


async def test_a_fault_while_reading_tags_is_a_fault_never_a_denial():
    legit = binding("web", "team-a", "2025-01-01T00:00:00Z")
    the_gate, _ = gate(legit, tags={"team": "a"}, instance=AwsFault(FaultKind.THROTTLED, "RequestLimitExceeded", "slow down"))
    admission = await the_gate.admit(legit, legit.desired(REGION))
    with pytest.raises(AwsFault) as raised:
        await the_gate.check_tags(legit, admission)
    assert raised.value.kind is FaultKind.THROTTLED and "cannot read the instance's tags" in raised.value.message
