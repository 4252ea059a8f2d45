"""The membership core of a set: matching instances + existing children -> creates, updates, deletes."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from instance_profile_operator.core.api import FINALIZER, SET_LABEL
from instance_profile_operator.core.membership import ChildSpec, child_body, child_name, controller_uid, plan

WEB = ChildSpec(profile=(("name", "web"),), region=None, deletion_policy="Delete")
instance_ids = st.from_regex(r"i-[0-9a-f]{17}", fullmatch=True)
DNS_LABELS = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def spec(instance_id, **changes):
    return {**WEB.for_instance(instance_id), **changes}


def test_new_instances_get_children_in_order():
    result = plan(["i-00000002", "i-00000001"], {}, WEB)
    assert result.create == ("i-00000001", "i-00000002")
    assert result.update == () and result.delete == ()


def test_children_of_instances_no_longer_matching_are_deleted():
    result = plan([], {"i-00000001": spec("i-00000001")}, WEB)
    assert result.delete == ("i-00000001",) and result.create == ()


def test_in_line_children_need_nothing():
    assert plan(["i-00000001"], {"i-00000001": spec("i-00000001")}, WEB).empty


def test_a_child_edited_by_hand_is_put_back():
    edited = spec("i-00000001", iamInstanceProfile={"name": "admin"})
    result = plan(["i-00000001"], {"i-00000001": edited}, WEB)
    assert result.update == (("i-00000001", spec("i-00000001")),)


def test_a_profile_change_updates_every_child():
    children = {i: spec(i) for i in ("i-00000001", "i-00000002")}
    arn = ChildSpec(profile=(("arn", "arn:aws:iam::123456789012:instance-profile/db"),),
                    region=None, deletion_policy="Delete")
    result = plan(children, children, arn)
    assert [i for i, _ in result.update] == ["i-00000001", "i-00000002"]
    assert all(s["iamInstanceProfile"] == {"arn": "arn:aws:iam::123456789012:instance-profile/db"}
               for _, s in result.update)


def test_deletion_policy_is_handed_down():
    retain = ChildSpec(profile=WEB.profile, region=None, deletion_policy="Retain")
    result = plan(["i-00000001"], {"i-00000001": spec("i-00000001")}, retain)
    assert result.update[0][1]["deletionPolicy"] == "Retain"


def test_a_child_in_another_region_is_deleted_to_be_made_again():
    child = spec("i-00000001", region="us-west-2")
    in_region = ChildSpec(profile=WEB.profile, region="eu-west-1", deletion_policy="Delete")
    result = plan(["i-00000001"], {"i-00000001": child}, in_region)
    assert result.delete == ("i-00000001",) and result.update == () and result.create == ()


def test_region_is_in_the_childs_spec_only_when_the_set_names_one():
    assert "region" not in WEB.for_instance("i-00000001")
    assert ChildSpec(WEB.profile, "eu-west-1", "Delete").for_instance("i-00000001")["region"] == "eu-west-1"


@given(matching=st.sets(instance_ids, max_size=20), existing=st.sets(instance_ids, max_size=20),
       edited=st.sets(instance_ids, max_size=20))
def test_after_the_plan_children_are_exactly_the_matching_instances(matching, existing, edited):
    children = {i: spec(i, deletionPolicy="Retain") if i in edited else spec(i) for i in existing}
    result = plan(sorted(matching), children, WEB)
    after = {i: s for i, s in children.items() if i not in result.delete}
    after.update({i: WEB.for_instance(i) for i in result.create})
    after.update(dict(result.update))
    assert after == {i: WEB.for_instance(i) for i in matching}
    assert not set(result.create) & set(children)
    assert set(result.delete) == existing - matching
    assert plan(sorted(matching), after, WEB).empty


@given(set_name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?", fullmatch=True),
       instance_id=instance_ids)
def test_child_names_are_valid_deterministic_and_keep_the_instance(set_name, instance_id):
    name = child_name(set_name, instance_id)
    assert len(name) <= 63 and DNS_LABELS.match(name)
    assert name.endswith(instance_id) and name == child_name(set_name, instance_id)


def test_long_set_names_stay_distinct():
    a, b = "a" * 60 + "x", "a" * 60 + "y"
    assert child_name(a, "i-00000001") != child_name(b, "i-00000001")
    assert child_name("web", "i-00000001") == "web-i-00000001"


# The set's status, from its children's statuses.

from instance_profile_operator.core.setstatus import Child, summarize  # noqa: E402
from instance_profile_operator.core.status import Report  # noqa: E402


def child(name, reason, ready=False, stalled=False, generation=1, observed=1):
    conditions = [{"type": "Ready", "status": "True" if ready else "False", "reason": reason,
                   "message": f"{name} {reason}", "observedGeneration": observed}]
    if stalled:
        conditions.append({"type": "Stalled", "status": "True", "reason": reason, "message": "",
                           "observedGeneration": observed})
    return Child(name=name, generation=generation, status={"conditions": conditions})


def test_a_set_is_ready_when_every_selected_instance_has_a_ready_child():
    report, counts = summarize(2, [child("a", "Associated", ready=True), child("b", "Adopted", ready=True)])
    assert report.ready and not report.reconciling and not report.stalled
    assert counts["selected"] == counts["ready"] == 2 and counts["notReady"] is None


def test_a_missing_child_keeps_the_set_reconciling():
    report, counts = summarize(2, [child("a", "Associated", ready=True)])
    assert not report.ready and report.reconciling and not report.stalled


def test_a_ready_condition_of_an_older_generation_does_not_count():
    report, counts = summarize(1, [child("a", "Associated", ready=True, generation=2, observed=1)])
    assert counts["ready"] == 0 and counts["notReady"][0]["reason"] == "Pending"


def test_conflicts_and_denials_are_counted_and_stall_the_set_when_nothing_else_moves():
    report, counts = summarize(3, [child("a", "Associated", ready=True),
                                   child("b", "Conflict", stalled=True),
                                   child("c", "PolicyDenied", stalled=True)])
    assert counts["conflicts"] == 1 and counts["denied"] == 1 and counts["ready"] == 1
    assert report.stalled and not report.reconciling and not report.ready
    assert [c["name"] for c in counts["notReady"]] == ["b", "c"]


def test_only_the_first_few_children_not_ready_are_listed():
    _, counts = summarize(10, [child(f"c{i}", "Associating") for i in range(10)])
    assert len(counts["notReady"]) == 5


def test_a_listing_fault_is_the_sets_report():
    fault = Report(reason="AccessDenied", message="denied", stalled=True)
    report, counts = summarize(0, [], fault)
    assert report is fault and counts["selected"] == 0


def test_a_child_is_born_owned_labelled_and_finalized():
    declared = ChildSpec((("name", "web"),), None, "Retain")
    body = child_body("team-a", "web", "set-uid", "i-0123456789abcdef0", declared)
    meta = body["metadata"]
    assert (meta["name"], meta["namespace"]) == (child_name("web", "i-0123456789abcdef0"), "team-a")
    assert meta["labels"] == {SET_LABEL: "web"} and controller_uid(body) == "set-uid"
    assert meta["finalizers"] == [FINALIZER]  # reconciled on its first event, no finalizer write of kopf's to wait for
    assert body["spec"] == declared.for_instance("i-0123456789abcdef0")
