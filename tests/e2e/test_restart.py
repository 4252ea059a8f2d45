"""Behaviour 8: killing the operator at any moment loses nothing and duplicates nothing."""

from __future__ import annotations

from ..support.kube import manifest
from ..support.waiting import wait_for
from .test_lifecycle import associations


def test_killed_mid_flight_resumes_without_a_second_association(start_operator, proxy, bindings, ec2, new_instance):
    instances = [new_instance() for _ in range(8)]
    proxy.delay("AssociateIamInstanceProfile", 0.5)  # keep calls in flight when the operator dies
    first = start_operator(IPO_AWS_CONCURRENCY="2")
    for n, instance_id in enumerate(instances):
        bindings.create(manifest(f"b{n}", instance_id))
    wait_for(lambda: proxy.calls["AssociateIamInstanceProfile"] >= 2, what="associations under way")
    first.stop(kill=True)
    sent_before_restart = proxy.calls["AssociateIamInstanceProfile"]
    assert sent_before_restart < len(instances)  # it really died mid-flight
    wait_for(lambda: proxy.in_flight == 0, what="the calls it left in flight to reach EC2")

    proxy.clear()
    second = start_operator()
    wait_for(lambda: all(bindings.is_ready(f"b{n}") for n in range(len(instances))), 30, "every binding Ready")
    for n, instance_id in enumerate(instances):
        [association] = associations(ec2, instance_id)
        assert bindings.status(f"b{n}")["associationId"] == association["AssociationId"]
    # every instance was associated exactly once: what the first run sent is adopted, not redone
    assert proxy.calls["AssociateIamInstanceProfile"] == len(instances)
    assert second.ec2_calls().get("associate_iam_instance_profile", 0) == len(instances) - sent_before_restart


def test_deleted_while_the_operator_is_down_is_finalized_after_restart(start_operator, bindings, ec2, new_instance):
    instance_id = new_instance()
    first = start_operator()
    bindings.create(manifest("later", instance_id))
    wait_for(lambda: bindings.is_ready("later"), what="Ready")
    first.stop(kill=True)
    bindings.delete("later")
    assert bindings.get("later")["metadata"]["deletionTimestamp"]  # the finalizer keeps it
    assert len(associations(ec2, instance_id)) == 1
    start_operator()
    wait_for(lambda: bindings.get("later") is None, 15, "the deletion to complete")
    assert associations(ec2, instance_id) == []


def test_sigterm_stops_gracefully(operator):
    assert operator.stop() == 0
