"""Behaviours 1-4 and 7: create, adopt, replace, delete, drift, and a status that tells the truth."""

from __future__ import annotations

import time

import pytest

from ..support.kube import Bindings, kubectl, manifest
from ..support.waiting import wait_for

WEB_ARN = "arn:aws:iam::123456789012:instance-profile/web-server"
BATCH_ARN = "arn:aws:iam::123456789012:instance-profile/batch-worker"


def associations(ec2, instance_id: str) -> list[dict]:
    found = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [instance_id]}])
    return found["IamInstanceProfileAssociations"]


def mutations(operator) -> dict[str, int]:
    calls = operator.ec2_calls()
    return {op: calls.get(op, 0) for op in (
        "associate_iam_instance_profile", "replace_iam_instance_profile_association", "disassociate_iam_instance_profile")}


def test_binding_becomes_ready_and_status_tells_the_truth(devenv, operator, bindings: Bindings, ec2, new_instance):
    instance_id = new_instance()
    bindings.create(manifest("web", instance_id))
    done = kubectl(devenv, "wait", "--for=condition=Ready", "ipb/web", "-n", bindings.namespace, "--timeout=30s", check=False)
    assert done.returncode == 0, done.stderr
    [association] = associations(ec2, instance_id)
    status = bindings.status("web")
    assert status["associationId"] == association["AssociationId"]
    assert status["state"] == "associated"
    assert status["instanceProfile"] == {"arn": WEB_ARN, "name": "web-server", "id": association["IamInstanceProfile"]["Id"]}
    assert "roleArn" not in status  # the operator's own account
    assert status["observedGeneration"] == 1 and status["region"] == "us-east-1"
    assert status["lastSyncTime"]
    assert [c["type"] for c in status["conditions"]] == ["Ready"]  # no Reconciling/Stalled once done
    assert bindings.get("web")["metadata"]["finalizers"] == ["ec2.instanceprofiles.dev/finalizer"]
    assert bindings.event_reasons("web") == ["Associated"]
    assert mutations(operator) == {"associate_iam_instance_profile": 1, "replace_iam_instance_profile_association": 0,
                                   "disassociate_iam_instance_profile": 0}
    assert status["account"] == WEB_ARN.split(":")[4]  # the profile's account: the operator's own
    rows = [line.split() for line in kubectl(devenv, "get", "ipb", "-A").stdout.splitlines()]
    assert [bindings.namespace, "web", instance_id, status["account"], "web-server", "web-server", "associated",
            "True", "Associated"] in [row[:9] for row in rows]


def test_same_profile_already_associated_is_adopted_without_a_mutating_call(operator, bindings, ec2, new_instance):
    instance_id = new_instance()
    existing = ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Arn": WEB_ARN})
    bindings.create(manifest("adopt", instance_id, {"name": "web-server"}))
    wait_for(lambda: bindings.is_ready("adopt"), what="Ready")
    assert bindings.status("adopt")["associationId"] == existing["IamInstanceProfileAssociation"]["AssociationId"]
    assert set(mutations(operator).values()) == {0}
    assert bindings.event_reasons("adopt") == []  # a plain adoption: two API writes (finalizer, status), no Event
    assert f"{bindings.namespace}/adopt: adopted association {existing['IamInstanceProfileAssociation']['AssociationId']}" in operator.log()


def test_other_profile_on_a_running_instance_is_replaced(operator, bindings, ec2, new_instance):
    instance_id = new_instance()
    ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Name": "batch-worker"})
    bindings.create(manifest("swap", instance_id, {"arn": WEB_ARN}))
    wait_for(lambda: bindings.is_ready("swap"), what="Ready")
    [association] = associations(ec2, instance_id)
    assert association["IamInstanceProfile"]["Arn"] == WEB_ARN
    assert mutations(operator)["replace_iam_instance_profile_association"] == 1
    assert mutations(operator)["disassociate_iam_instance_profile"] == 0
    assert "Replaced" in bindings.event_reasons("swap")


def test_other_profile_on_a_stopped_instance_is_disassociated_then_associated(operator, bindings, ec2, new_instance):
    instance_id = new_instance("stopped")
    ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Name": "batch-worker"})
    bindings.create(manifest("stopped", instance_id))
    wait_for(lambda: bindings.is_ready("stopped"), what="Ready")
    [association] = associations(ec2, instance_id)
    assert association["IamInstanceProfile"]["Arn"] == WEB_ARN
    assert mutations(operator) == {"associate_iam_instance_profile": 1, "replace_iam_instance_profile_association": 0,
                                   "disassociate_iam_instance_profile": 1}
    assert bindings.event_reasons("stopped") == ["Disassociated", "Associated"]


def test_pending_instance_is_waited_for(operator, proxy, bindings, ec2, new_instance):
    proxy.report_pending(describes=4)
    instance_id = new_instance()
    bindings.create(manifest("early", instance_id))
    waiting = wait_for(lambda: bindings.condition("early").get("reason") == "InstanceNotReady" and bindings.condition("early"),
                       what="InstanceNotReady")
    assert "is pending" in waiting["message"]
    assert bindings.condition("early", "Reconciling")["status"] == "True"
    assert not bindings.condition("early", "Stalled")
    assert associations(ec2, instance_id) == []
    wait_for(lambda: bindings.is_ready("early"), what="Ready once the instance runs")


def test_associating_is_followed_until_associated_without_a_timer_per_binding(operator, proxy, bindings, new_instance):
    proxy.report_associating(describes=1000)  # until the test has seen it (a count could settle before a write)
    instance_id = new_instance()
    bindings.create(manifest("slow", instance_id))
    seen = wait_for(lambda: bindings.status("slow").get("state") == "associating" and bindings.status("slow"), what="associating")
    ready = next(c for c in seen["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Associating"
    assert any(c["type"] == "Reconciling" and c["status"] == "True" for c in seen["conditions"])
    proxy.report_associating(describes=0)  # EC2 settles
    wait_for(lambda: bindings.is_ready("slow"), what="Ready after EC2 settles")
    assert bindings.status("slow")["state"] == "associated"


def test_changing_the_profile_replaces_the_association(operator, bindings, ec2, new_instance):
    instance_id = new_instance()
    bindings.create(manifest("change", instance_id))
    wait_for(lambda: bindings.is_ready("change"), what="Ready")
    first = bindings.get("change")["status"]["conditions"][0]["lastTransitionTime"]
    bindings.patch_spec("change", {"iamInstanceProfile": {"name": "batch-worker"}})
    wait_for(lambda: bindings.is_ready("change") and bindings.status("change")["instanceProfile"]["arn"] == BATCH_ARN,
             what="Ready with batch-worker")
    [association] = associations(ec2, instance_id)
    status = bindings.status("change")
    assert association["IamInstanceProfile"]["Arn"] == BATCH_ARN
    assert status["associationId"] == association["AssociationId"] and status["observedGeneration"] == 2
    assert status["conditions"][0]["observedGeneration"] == 2
    assert mutations(operator)["replace_iam_instance_profile_association"] == 1
    assert bindings.event_reasons("change") == ["Associated", "Replaced"]
    if status["conditions"][0]["lastTransitionTime"] != first:  # Ready may have flipped False in between
        assert status["conditions"][0]["lastTransitionTime"] > first


def test_deleting_disassociates_promptly(operator, bindings, ec2, new_instance):
    instance_id = new_instance()
    bindings.create(manifest("gone", instance_id))
    wait_for(lambda: bindings.is_ready("gone"), what="Ready")
    started = time.monotonic()
    bindings.delete("gone")
    wait_for(lambda: bindings.get("gone") is None, 10, "the binding to be deleted")
    elapsed = time.monotonic() - started
    assert associations(ec2, instance_id) == []
    assert mutations(operator)["disassociate_iam_instance_profile"] == 1
    print(f"deletion took {elapsed:.2f} s")


def test_a_binding_being_deleted_reads_deleting_not_ready_in_kubectl(devenv, operator, proxy, bindings, new_instance):
    """kstatus: an object being deleted is Terminating, whatever it was before."""
    bindings.create(manifest("leaving", new_instance()))
    wait_for(lambda: bindings.is_ready("leaving"), what="Ready")
    proxy.fail("DisassociateIamInstanceProfile", "RequestLimitExceeded", "Request limit exceeded.", status=503, times=None)
    try:
        bindings.delete("leaving")
        columns = wait_for(lambda: (row := kubectl(devenv, "get", "ipb", "leaving", "-n", bindings.namespace,
                                                   "--no-headers", check=False).stdout.split()) and "Deleting" in row and row,
                           what="kubectl to show the binding Deleting")
        assert columns[6:8] == ["False", "Deleting"], columns
        assert "removing association" in bindings.condition("leaving")["message"]
    finally:
        proxy.clear()
    wait_for(lambda: bindings.get("leaving") is None, what="the binding deleted once EC2 answers")


def test_retain_leaves_the_association(operator, bindings, ec2, new_instance):
    instance_id = new_instance()
    bindings.create(manifest("keep", instance_id, deletionPolicy="Retain"))
    wait_for(lambda: bindings.is_ready("keep"), what="Ready")
    bindings.delete("keep")
    wait_for(lambda: bindings.get("keep") is None, 10, "the binding to be deleted")
    [association] = associations(ec2, instance_id)
    assert association["IamInstanceProfile"]["Arn"] == WEB_ARN
    assert mutations(operator)["disassociate_iam_instance_profile"] == 0


def test_delete_leaves_an_association_made_outside_kubernetes_alone(start_operator, bindings, ec2, new_instance):
    operator = start_operator(IPO_RESYNC_SECONDS="3600")  # no resync gets to correct the change first
    instance_id = new_instance()
    bindings.create(manifest("mine", instance_id))
    wait_for(lambda: bindings.is_ready("mine"), what="Ready")
    [ours] = associations(ec2, instance_id)
    ec2.disassociate_iam_instance_profile(AssociationId=ours["AssociationId"])
    theirs = ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Name": "batch-worker"})
    bindings.delete("mine")
    wait_for(lambda: bindings.get("mine") is None, 10, "the binding to be deleted")
    [left] = associations(ec2, instance_id)
    assert left["AssociationId"] == theirs["IamInstanceProfileAssociation"]["AssociationId"]
    assert mutations(operator)["disassociate_iam_instance_profile"] == 0


@pytest.mark.parametrize("fate", ["terminated", "association-removed"])
def test_deletion_never_blocks_when_the_instance_or_association_is_gone(operator, bindings, ec2, new_instance, fate):
    instance_id = new_instance()
    bindings.create(manifest("orphan", instance_id))
    wait_for(lambda: bindings.is_ready("orphan"), what="Ready")
    if fate == "terminated":
        ec2.terminate_instances(InstanceIds=[instance_id])
    else:
        ec2.disassociate_iam_instance_profile(AssociationId=associations(ec2, instance_id)[0]["AssociationId"])
    bindings.delete("orphan")
    wait_for(lambda: bindings.get("orphan") is None, 10, "the binding to be deleted")


def test_association_removed_outside_is_restored_at_the_next_resync(operator, bindings, ec2, new_instance):
    instance_id = new_instance()
    bindings.create(manifest("drift", instance_id))
    wait_for(lambda: bindings.is_ready("drift"), what="Ready")
    [before] = associations(ec2, instance_id)
    ec2.disassociate_iam_instance_profile(AssociationId=before["AssociationId"])
    restored = wait_for(lambda: associations(ec2, instance_id), 15, "a new association")
    assert restored[0]["IamInstanceProfile"]["Arn"] == WEB_ARN and restored[0]["AssociationId"] != before["AssociationId"]
    wait_for(lambda: bindings.status("drift").get("associationId") == restored[0]["AssociationId"], what="status to follow")
    drift = [e for e in bindings.events("drift") if e.reason == "DriftCorrected"]
    assert len(drift) == 1 and before["AssociationId"] in drift[0].message


def test_profile_replaced_outside_is_replaced_back(operator, bindings, ec2, new_instance):
    instance_id = new_instance()
    bindings.create(manifest("drift2", instance_id))
    wait_for(lambda: bindings.is_ready("drift2"), what="Ready")
    [before] = associations(ec2, instance_id)
    ec2.replace_iam_instance_profile_association(AssociationId=before["AssociationId"], IamInstanceProfile={"Name": "batch-worker"})
    wait_for(lambda: associations(ec2, instance_id)[0]["IamInstanceProfile"]["Arn"] == WEB_ARN, 15, "web-server back")
    # the Event follows the EC2 call that put it back
    wait_for(lambda: "DriftCorrected" in bindings.event_reasons("drift2"), what="a DriftCorrected Event")
    wait_for(lambda: bindings.is_ready("drift2"), what="Ready")


def test_steady_state_makes_no_writes_and_no_mutating_calls(operator, bindings, new_instance):
    names = [f"steady-{n}" for n in range(5)]
    for name in names:
        bindings.create(manifest(name, new_instance()))
    wait_for(lambda: all(bindings.is_ready(n) for n in names), what="all Ready")
    versions = {n: bindings.get(n)["metadata"]["resourceVersion"] for n in names}
    before = operator.ec2_calls()
    patches = operator.status_patches()
    key = "describe_iam_instance_profile_associations"
    wait_for(lambda: operator.ec2_calls()[key] >= before[key] + 2, 15, "two resyncs")
    after = operator.ec2_calls()
    assert after.get("describe_instances", 0) == before.get("describe_instances", 0)
    assert {k: v for k, v in after.items() if "describe" not in k} == {k: v for k, v in before.items() if "describe" not in k}
    assert operator.status_patches() == patches
    assert {n: bindings.get(n)["metadata"]["resourceVersion"] for n in names} == versions
