"""Behaviours 5 and 6: conflicts between bindings, and every kind of AWS failure."""

from __future__ import annotations

import pytest

from ..support.kube import Bindings, create_namespace, manifest
from ..support.waiting import wait_for
from .test_lifecycle import associations, mutations

PROFILE_NOT_PROPAGATED = "Value (web-server) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
PASS_ROLE = ("You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/ipo/x "
             "is not authorized to perform: iam:PassRole on resource: arn:aws:iam::123456789012:role/web")


def warnings(bindings: Bindings, name: str, reason: str) -> list:
    return [e for e in bindings.events(name) if e.reason == reason and e.type == "Warning"]


def test_second_binding_of_an_instance_reports_conflict_then_takes_over(api_client, start_operator, namespace, ec2, new_instance):
    other = create_namespace(api_client)
    first, second = Bindings(api_client, namespace), Bindings(api_client, other)
    operator = start_operator(namespaces=[namespace, other])
    instance_id = new_instance()
    first.create(manifest("owner", instance_id))
    wait_for(lambda: first.is_ready("owner"), what="the first binding Ready")
    second.create(manifest("late", instance_id, {"name": "batch-worker"}))
    ready = wait_for(lambda: second.condition("late").get("reason") == "Conflict" and second.condition("late"), what="Conflict")
    # another tenant's binding is not named: neither its namespace nor its name
    assert ready["status"] == "False" and "already bound by a binding in another namespace" in ready["message"]
    assert namespace not in ready["message"] and "owner" not in ready["message"]
    assert second.condition("late", "Stalled")["status"] == "True"
    # same namespace: named. (Created maybe within the same second as the owner: the name breaks the tie.)
    first.create(manifest("rival", instance_id, {"name": "batch-worker"}))
    rival = wait_for(lambda: first.condition("rival").get("reason") == "Conflict" and first.condition("rival"), what="Conflict")
    assert "already bound by InstanceProfileBinding owner;" in rival["message"]
    first.delete("rival")
    wait_for(lambda: first.get("rival") is None, what="the rival gone")
    assert "associationId" not in second.status("late")
    assert [e.reason for e in second.events("late")] == ["Conflict"]
    assert mutations(operator) == {"associate_iam_instance_profile": 1, "replace_iam_instance_profile_association": 0,
                                   "disassociate_iam_instance_profile": 0}
    first.delete("owner")
    wait_for(lambda: second.is_ready("late"), 20, "the second binding to take over")
    [association] = associations(ec2, instance_id)
    assert association["IamInstanceProfile"]["Arn"].endswith("/batch-worker")
    assert second.status("late")["associationId"] == association["AssociationId"]
    assert not second.condition("late", "Stalled")


def test_profile_not_yet_propagated_is_retried_until_iam_catches_up(operator, proxy, bindings, new_instance):
    proxy.fail("AssociateIamInstanceProfile", "InvalidParameterValue", PROFILE_NOT_PROPAGATED, times=None)
    bindings.create(manifest("fresh", new_instance()))
    ready = wait_for(lambda: bindings.condition("fresh").get("reason") == "InstanceProfileNotFound" and bindings.condition("fresh"),
                     what="InstanceProfileNotFound")
    assert ready["status"] == "False" and PROFILE_NOT_PROPAGATED in ready["message"]
    assert bindings.condition("fresh", "Reconciling")["status"] == "True"  # still expected to resolve by itself
    assert not bindings.condition("fresh", "Stalled")
    repeated = wait_for(lambda: [e for e in warnings(bindings, "fresh", "InstanceProfileNotFound") if e.count >= 2],
                        what="the Warning Event to be counted again")
    assert len(warnings(bindings, "fresh", "InstanceProfileNotFound")) == 1 == len(repeated)  # aggregated, not a storm
    proxy.clear()  # IAM has propagated
    wait_for(lambda: bindings.is_ready("fresh"), 15, "Ready once the profile is visible")
    assert not bindings.condition("fresh", "Reconciling")


def test_missing_pass_role_permission_stalls_with_the_aws_message_then_recovers(operator, proxy, bindings, new_instance):
    proxy.fail("AssociateIamInstanceProfile", "UnauthorizedOperation", PASS_ROLE, status=403, times=None)
    bindings.create(manifest("denied", new_instance()))
    stalled = wait_for(lambda: bindings.condition("denied", "Stalled"), what="Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "AccessDenied" and "iam:PassRole" in stalled["message"]
    assert bindings.condition("denied")["reason"] == "AccessDenied"
    assert not bindings.condition("denied", "Reconciling")
    assert warnings(bindings, "denied", "AccessDenied")
    proxy.clear()  # someone fixed the policy
    wait_for(lambda: bindings.is_ready("denied"), 15, "Ready after the permission is granted")


def test_a_brief_throttle_is_retried_quietly(operator, proxy, bindings, new_instance):
    proxy.fail("AssociateIamInstanceProfile", "RequestLimitExceeded", "Request limit exceeded.", status=503, times=1)
    bindings.create(manifest("quiet", new_instance()))
    wait_for(lambda: bindings.is_ready("quiet"), what="Ready")
    assert proxy.injected["AssociateIamInstanceProfile"] == 1
    assert bindings.event_reasons("quiet") == ["Associated"]  # no Warning at all


@pytest.mark.parametrize("code,status,reason", [
    ("RequestLimitExceeded", 503, "Throttled"),
    ("InternalError", 500, "AWSUnavailable"),
])
def test_persistent_transient_failure_surfaces_without_hot_looping(operator, proxy, bindings, new_instance, code, status, reason):
    proxy.fail("AssociateIamInstanceProfile", code, "try again later", status=status, times=None)
    bindings.create(manifest("flaky", new_instance()))
    surfaced = wait_for(lambda: bindings.condition("flaky").get("reason") == reason and bindings.condition("flaky"), 30, reason)
    assert code in surfaced["message"]
    assert bindings.condition("flaky", "Reconciling")["status"] == "True" and not bindings.condition("flaky", "Stalled")
    # capped exponential backoff (0.2 s doubling to 2 s here), two botocore attempts per try: a hot loop would be hundreds
    attempts = proxy.injected["AssociateIamInstanceProfile"]
    assert 6 <= attempts <= 20
    proxy.clear()
    wait_for(lambda: bindings.is_ready("flaky"), 15, "Ready after EC2 recovers")


@pytest.mark.parametrize("fate", ["never-existed", "terminated"])
def test_missing_instance_is_reported_and_nothing_is_associated(operator, bindings, new_instance, fate):
    instance_id = "i-0badc0ffee0ddf00d" if fate == "never-existed" else new_instance("terminated")
    bindings.create(manifest("ghost", instance_id))
    ready = wait_for(lambda: bindings.condition("ghost").get("reason") == "InstanceNotFound" and bindings.condition("ghost"),
                     what="InstanceNotFound")
    assert instance_id in ready["message"] and ("does not exist" in ready["message"] or "terminated" in ready["message"])
    assert mutations(operator)["associate_iam_instance_profile"] == 0
    assert warnings(bindings, "ghost", "InstanceNotFound")


def test_operator_is_unharmed_by_errors_and_keeps_serving_other_bindings(operator, proxy, bindings, new_instance):
    bad, good = new_instance(), new_instance()
    proxy.fail("AssociateIamInstanceProfile", "Gibberish", "something nobody expected", status=400, times=None, match=bad)
    bindings.create(manifest("bad", bad))
    bindings.create(manifest("good", good))
    wait_for(lambda: bindings.is_ready("good"), what="the healthy binding Ready")
    stalled = wait_for(lambda: bindings.condition("bad", "Stalled"), what="the broken binding Stalled")
    assert stalled["reason"] == "AWSError" and "Gibberish: something nobody expected" in stalled["message"]
    assert operator.process.poll() is None


def test_a_users_mistake_is_no_reconcile_error_and_a_normal_start_logs_no_error(start_operator, bindings, new_instance):
    """Generic reconcile-error alerts must not fire on a tenant's typo: the status and the
    bindings-by-reason gauge report it; reconcile_errors counts failures to talk to AWS or Kubernetes."""
    operator = start_operator()
    bindings.create(manifest("typo", "i-0badc0ffee0ddf00d"))
    bindings.create(manifest("fine", new_instance()))
    wait_for(lambda: bindings.condition("typo").get("reason") == "InstanceNotFound" and bindings.is_ready("fine"),
             what="InstanceNotFound beside a Ready binding")
    wait_for(lambda: operator.total("controller_runtime_reconcile_total", result="requeue_after") >= 2,
             what="the missing instance retried")
    assert operator.total("controller_runtime_reconcile_errors_total") == 0
    assert operator.total("controller_runtime_reconcile_total", result="error") == 0
    assert operator.total("ipo_bindings", reason="InstanceNotFound") == 1
    assert "[ERROR" not in operator.log() and '"level": "error"' not in operator.log().lower(), operator.log()
