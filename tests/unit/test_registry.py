"""Registry: the bindings the operator knows, indexed by the instance they name."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from instance_profile_operator.core.model import Binding, Target
from instance_profile_operator.bindings.registry import Registry

DEFAULT_REGION = "us-east-1"
INSTANCE = "i-0123456789abcdef0"


def binding(
    name: str,
    namespace: str = "default",
    instance: str = INSTANCE,
    region: str | None = None,
    created: str = "2025-01-01T00:00:00Z",
    generation: int = 1,
    deleting: bool = False,
    finalized: bool = True,
    uid: str | None = None,
    status: dict | None = None,
) -> Binding:
    spec = {"instanceId": instance, "iamInstanceProfile": {"name": "web"}}
    if region:
        spec["region"] = region
    return Binding(
        namespace=namespace, name=name, uid=uid or f"uid-{namespace}-{name}", generation=generation,
        created=created, deleting=deleting, finalized=finalized, spec=spec, status=status or {},
    )


def registry(*bindings: Binding) -> Registry:
    reg = Registry(DEFAULT_REGION)
    for b in bindings:
        reg.upsert(b)
    return reg


def admitted(*bindings: Binding) -> Registry:
    """A registry whose bindings were all admitted in the operator's own account."""
    reg = registry(*bindings)
    for b in bindings:
        reg.place(b.key, "")
    return reg


TARGET = Target(DEFAULT_REGION, INSTANCE)


# --------------------------------------------------------------------------------------------
# owner()
# --------------------------------------------------------------------------------------------


def test_owner_is_the_earliest_created():
    late = binding("a-late", created="2025-03-01T00:00:00Z")
    early = binding("z-early", created="2025-01-01T00:00:00Z")
    middle = binding("m-middle", created="2025-02-01T00:00:00Z")
    assert registry(late, early, middle).owner(TARGET) == early


@pytest.mark.parametrize(
    ("contenders", "winner"),
    [
        pytest.param([("ns-b", "a"), ("ns-a", "z")], ("ns-a", "z"), id="namespace-first"),
        pytest.param([("ns", "b"), ("ns", "a")], ("ns", "a"), id="then-name"),
    ],
)
def test_owner_ties_broken_by_namespace_then_name(contenders, winner):
    reg = registry(*(binding(name, namespace=ns) for ns, name in contenders))
    assert reg.owner(TARGET).key == winner


def test_within_the_same_second_the_binding_already_managing_keeps_the_instance():
    managing = binding("owner", namespace="ns-z", status={"associationId": "iip-assoc-1"})
    newcomer = binding("a-newcomer", namespace="ns-a")  # same creationTimestamp, sorts first by name
    assert registry(newcomer, managing).owner(TARGET).key == ("ns-z", "owner")
    assert registry(newcomer, binding("owner", namespace="ns-z")).owner(TARGET).key == ("ns-a", "a-newcomer")


def test_owner_ties_do_not_depend_on_insertion_order():
    keys = [("ns-a", "b"), ("ns-b", "a"), ("ns-a", "a"), ("ns-c", "0"), ("ns-a", "c")]
    for permutation in itertools.permutations(keys):
        reg = registry(*(binding(name, namespace=ns) for ns, name in permutation))
        assert reg.owner(TARGET).key == ("ns-a", "a"), permutation


def test_owner_is_per_instance_and_region():
    here = binding("here", created="2025-02-01T00:00:00Z")
    other_instance = binding("other", instance="i-0fffffffffffffff0", created="2025-01-01T00:00:00Z")
    other_region = binding("away", region="eu-west-1", created="2025-01-01T00:00:00Z")
    reg = registry(here, other_instance, other_region)
    assert reg.owner(TARGET) == here
    assert reg.owner(Target("eu-west-1", INSTANCE)) == other_region
    assert reg.owner(Target(DEFAULT_REGION, "i-0fffffffffffffff0")) == other_instance


def test_owner_of_unknown_instance_is_none():
    assert registry().owner(TARGET) is None
    assert registry(binding("a")).owner(Target(DEFAULT_REGION, "i-00000000")) is None


def test_invalid_spec_has_no_target():
    bad = dataclasses.replace(binding("bad"), spec={"instanceId": "nope", "iamInstanceProfile": {"name": "web"}})
    reg = registry(bad)
    assert reg.get(bad.key) == bad
    assert reg.target(bad) is None
    assert reg.instances_by_place() == {}


# --------------------------------------------------------------------------------------------
# upsert()
# --------------------------------------------------------------------------------------------


def test_upsert_new_binding_needs_reconcile():
    reg = Registry(DEFAULT_REGION)
    assert reg.upsert(binding("a")) is True
    assert len(reg) == 1
    assert reg.keys() == [("default", "a")]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"status": {"associationId": "iip-assoc-1"}}, False, id="status-only"),
        pytest.param({}, False, id="no-change"),
        pytest.param({"generation": 2}, True, id="generation"),
        pytest.param({"deleting": True}, True, id="deletion"),
        pytest.param({"finalized": False}, True, id="finalizer-removed"),
        pytest.param({"uid": "uid-recreated"}, True, id="recreated-same-name"),
    ],
)
def test_upsert_reports_whether_to_reconcile(change, expected):
    original = binding("a")
    reg = registry(original)
    updated = dataclasses.replace(original, **change)
    assert reg.upsert(updated) is expected
    assert reg.get(original.key) == updated  # remembered either way


def test_upsert_finalizer_added():
    reg = registry(binding("a", finalized=False))
    assert reg.upsert(binding("a", finalized=True)) is True


def test_upsert_moves_binding_to_new_target():
    reg = admitted(binding("a"))
    moved = binding("a", instance="i-0fffffffffffffff0", generation=2)
    reg.upsert(moved)
    assert reg.owner(TARGET) is None
    assert reg.owner(Target(DEFAULT_REGION, "i-0fffffffffffffff0")) == moved
    assert reg.instances_by_place() == {("", DEFAULT_REGION): ["i-0fffffffffffffff0"]}


# --------------------------------------------------------------------------------------------
# remove()
# --------------------------------------------------------------------------------------------


def test_remove_returns_contenders_of_the_same_instance():
    first = binding("first", created="2025-01-01T00:00:00Z")
    second = binding("second", created="2025-02-01T00:00:00Z")
    third = binding("third", namespace="other", created="2025-03-01T00:00:00Z")
    unrelated = binding("unrelated", instance="i-0fffffffffffffff0")
    reg = registry(first, second, third, unrelated)

    assert reg.remove(first.key) == sorted([second.key, third.key])
    assert reg.get(first.key) is None
    assert reg.owner(TARGET) == second  # the next in line takes over


def test_remove_last_binding_of_instance():
    reg = registry(binding("only"))
    assert reg.remove(("default", "only")) == []
    assert reg.owner(TARGET) is None
    assert reg.instances_by_place() == {}
    assert len(reg) == 0


def test_remove_unknown_key():
    assert registry(binding("a")).remove(("default", "missing")) == []


# --------------------------------------------------------------------------------------------
# instances_by_place()
# --------------------------------------------------------------------------------------------


def test_instances_by_place_groups_by_region():
    reg = admitted(
        binding("a", instance="i-0000000000000000a"),
        binding("b", instance="i-0000000000000000b", region=DEFAULT_REGION),
        binding("c", instance="i-0000000000000000c", region="eu-west-1"),
        binding("c2", instance="i-0000000000000000c", region="eu-west-1"),  # same instance listed once
    )
    grouped = {place: sorted(ids) for place, ids in reg.instances_by_place().items()}
    assert grouped == {
        ("", DEFAULT_REGION): ["i-0000000000000000a", "i-0000000000000000b"],
        ("", "eu-west-1"): ["i-0000000000000000c"],
    }


ROLE = "arn:aws:iam::222233334444:role/ipo"


def test_the_same_instance_id_in_two_accounts_is_two_instances():
    reg = admitted(binding("own", instance="i-0000000000000000a"),
                   binding("other", instance="i-0000000000000000a", created="2025-01-02T00:00:00Z"))
    assert reg.owner(Target(DEFAULT_REGION, "i-0000000000000000a")).name == "own"  # one contends with the other...
    reg.place(("default", "other"), ROLE)  # ...until its policy places it in another account
    assert reg.owner(Target(DEFAULT_REGION, "i-0000000000000000a")).name == "own"
    assert reg.owner(Target(DEFAULT_REGION, "i-0000000000000000a", ROLE)).name == "other"
    assert {place: ids for place, ids in reg.instances_by_place().items()} == {
        ("", DEFAULT_REGION): ["i-0000000000000000a"], (ROLE, DEFAULT_REGION): ["i-0000000000000000a"]}


def test_the_account_recorded_in_status_places_a_binding_after_a_restart():
    reg = registry(binding("other", instance="i-0000000000000000a", status={"roleArn": ROLE}))
    assert reg.owner(Target(DEFAULT_REGION, "i-0000000000000000a", ROLE)).name == "other"


def test_instances_by_place_excludes_instances_only_deleting_bindings_name():
    reg = admitted(
        binding("gone", instance="i-0000000000000000a", deleting=True),
        binding("leaving", instance="i-0000000000000000b", deleting=True),
        binding("staying", instance="i-0000000000000000b"),
    )
    assert reg.instances_by_place() == {("", DEFAULT_REGION): ["i-0000000000000000b"]}


# --------------------------------------------------------------------------------------------
# remember_status()
# --------------------------------------------------------------------------------------------


def test_remember_status_merges_and_drops_none():
    reg = registry(binding("a", status={"associationId": "iip-assoc-1", "state": "associated", "region": "us-east-1"}))
    reg.remember_status(("default", "a"), {"associationId": None, "state": None, "observedGeneration": 4})
    assert reg.get(("default", "a")).status == {"region": "us-east-1", "observedGeneration": 4}


def test_remember_status_overwrites_values():
    reg = registry(binding("a", status={"associationId": "iip-assoc-1"}))
    reg.remember_status(("default", "a"), {"associationId": "iip-assoc-2"})
    assert reg.get(("default", "a")).status == {"associationId": "iip-assoc-2"}


def test_remember_status_keeps_the_rest_of_the_binding():
    original = binding("a", generation=5)
    reg = registry(original)
    reg.remember_status(original.key, {"associationId": "iip-assoc-1"})
    kept = reg.get(original.key)
    assert dataclasses.replace(kept, status={}) == original
    # A status write of our own is not a reason to reconcile again.
    assert reg.upsert(dataclasses.replace(original, status={"associationId": "iip-assoc-1"})) is False


def test_remember_status_of_unknown_binding_is_ignored():
    reg = Registry(DEFAULT_REGION)
    reg.remember_status(("default", "missing"), {"associationId": "iip-assoc-1"})
    assert reg.get(("default", "missing")) is None
    assert len(reg) == 0


def test_upsert_tolerates_non_mapping_profile():
    bad = dataclasses.replace(binding("bad"), spec={"instanceId": INSTANCE, "iamInstanceProfile": "web"})
    reg = Registry(DEFAULT_REGION)
    assert reg.upsert(bad) is True
    assert reg.target(bad) is None


# --------------------------------------------------------------------------------------------
# owner(eligible): only bindings their policies admit own an instance
# --------------------------------------------------------------------------------------------


def test_a_denied_binding_created_first_never_owns_the_instance():
    squatter = binding("squatter", namespace="no-policy", created="2025-01-01T00:00:00Z")
    legit = binding("legit", namespace="team-a", created="2025-01-01T00:00:05Z")
    reg = registry(squatter, legit)
    assert reg.owner(TARGET) == squatter  # by precedence alone
    assert reg.owner(TARGET, lambda b: b.namespace != "no-policy") == legit
    assert reg.owner(TARGET, lambda b: False) is None


def test_rivals_are_the_other_bindings_of_the_instance():
    a, b, elsewhere = binding("a"), binding("b"), binding("c", instance="i-0fffffffffffffff0")
    reg = registry(a, b, elsewhere)
    assert reg.rivals(a.key) == [b] and reg.rivals(elsewhere.key) == [] and reg.rivals(("x", "y")) == []


def test_resyncs_describe_instances_for_admitted_or_recorded_bindings_only():
    recorded = binding("recorded", instance="i-0000000000000000a", status={"associationId": "iip-assoc-1"})
    unjudged = binding("new", instance="i-0000000000000000b")
    denied = binding("denied", instance="i-0000000000000000c", status={"associationId": "iip-assoc-3"})
    reg = registry(recorded, unjudged, denied)
    reg.deny(denied.key)
    assert reg.instances_by_place() == {("", DEFAULT_REGION): ["i-0000000000000000a"]}  # a denied one costs no EC2 call
    reg.place(unjudged.key, "")
    reg.deny(recorded.key)
    assert reg.instances_by_place() == {("", DEFAULT_REGION): ["i-0000000000000000b"]}
