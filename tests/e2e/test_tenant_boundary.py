"""Issue 14: the tenant boundary, in deletion as in creation, tried as an adversarial tenant would.

The tenant can only create, edit (metadata included) and delete bindings in its namespace, and
the admission webhook does not answer. The operator runs under the shipped RBAC, against moto
behind the fault proxy, which sees every AWS request it sends.
"""

from __future__ import annotations

import json
import time

import pytest
from kubernetes.client.exceptions import ApiException

from ..support.kube import Bindings, create_namespace, kubectl, manifest
from ..support.waiting import wait_for
from .test_lifecycle import associations
from .test_tenancy import denied, mutating_calls, policies, tagged_instance, team_policy, tenant  # noqa: F401 (a fixture)


def live(ec2, instance_id: str) -> list[dict]:
    return [a for a in associations(ec2, instance_id) if a["State"] != "disassociated"]


def node_instance(ec2, new_instance, profile: str = "batch-worker", team: str | None = None) -> tuple[str, str]:
    """An instance carrying a profile that no binding manages (a node's: a pod reads its instance ID
    and profile from IMDS); returns its ID and its association's."""
    instance_id = tagged_instance(ec2, new_instance, team) if team else new_instance()
    made = ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Name": profile})
    return instance_id, made["IamInstanceProfileAssociation"]["AssociationId"]


def without_policy(api_client) -> Bindings:
    return Bindings(api_client, create_namespace(api_client, "nopolicy", labels={"team": "none"}))


def test_a_tenant_without_a_policy_cannot_remove_a_nodes_profile(api_client, start_operator, proxy, ec2, new_instance):
    node, node_association = node_instance(ec2, new_instance)
    attacker = without_policy(api_client)
    start_operator(namespaces=[attacker.namespace])

    attacker.create(manifest("steal", node, {"name": "batch-worker"}))
    assert "no InstanceProfilePolicy selects namespace" in denied(attacker, "steal")["message"]
    attacker.delete("steal")
    wait_for(lambda: attacker.get("steal") is None, what="the denied binding released")

    assert proxy.mentioning(node) == []  # never admitted: no EC2 call of any kind, in creation or deletion
    assert mutating_calls(proxy) == 0
    assert [a["AssociationId"] for a in live(ec2, node)] == [node_association]


@pytest.mark.parametrize("state", ["associated", "associating"])
def test_a_tenant_cannot_adopt_another_teams_association(api_client, start_operator, proxy, policies, ec2, new_instance, state):
    team_a = tenant(api_client, "a")
    policies(team_policy("a", "web-server"))
    instance_b, theirs = node_instance(ec2, new_instance, "web-server", team="b")  # team B's, with a profile A may use
    if state == "associating":
        proxy.report_associating(describes=1000)  # settling: still not to be written before the tag check
    start_operator(namespaces=[team_a.namespace])

    team_a.create(manifest("adopt", instance_b, {"name": "web-server"}))
    refused = denied(team_a, "adopt")
    assert "the instance lacks tag `team=a`" in refused["message"]
    assert not team_a.is_ready("adopt")
    assert theirs not in json.dumps(team_a.get("adopt"))  # nothing of team B's association shows
    assert [(e.reason, theirs in e.message) for e in team_a.events("adopt")] == [("PolicyDenied", False)]

    team_a.delete("adopt")
    wait_for(lambda: team_a.get("adopt") is None, what="the binding gone")
    assert mutating_calls(proxy) == 0 and proxy.mentioning(theirs) == []
    assert [a["AssociationId"] for a in live(ec2, instance_b)] == [theirs]


def test_spec_edits_while_the_finalizer_waits_change_nothing_it_removes(api_client, start_operator, proxy, policies, ec2, new_instance):
    team = tenant(api_client, "s")
    policies(team_policy("s", "web-server"))
    own = tagged_instance(ec2, new_instance, "s")
    node, node_association = node_instance(ec2, new_instance, "batch-worker", team="s")  # a profile team S may not bind
    start_operator(namespaces=[team.namespace])
    team.create(manifest("web", own, {"name": "web-server"}))
    wait_for(lambda: team.is_ready("web"), what="Ready")
    recorded = team.status("web")["associationId"]

    proxy.fail("DisassociateIamInstanceProfile", "InternalError", "try again later", status=500, times=None)
    team.delete("web")
    wait_for(lambda: proxy.injected["DisassociateIamInstanceProfile"] >= 2, what="the finalizer retrying")
    generation = team.get("web")["metadata"]["generation"]
    team.patch_spec("web", {"iamInstanceProfile": {"name": "batch-worker"}, "deletionPolicy": "Delete"})
    assert team.get("web")["metadata"]["generation"] == generation + 1  # the edit landed while the finalizer waits
    for immutable in ({"instanceId": node}, {"region": "eu-west-1"}):  # the schema refuses these outright
        with pytest.raises(ApiException) as refused:
            team.patch_spec("web", immutable)
        assert refused.value.status == 422
    proxy.clear()
    wait_for(lambda: team.get("web") is None, 20, "the binding gone")

    assert live(ec2, own) == []  # what it recorded, where it recorded it
    assert [a["AssociationId"] for a in live(ec2, node)] == [node_association]
    assert proxy.mentioning(node) == [] and proxy.mentioning(node_association) == []
    assert set(proxy.mentioning(recorded)) <= {"DescribeIamInstanceProfileAssociations", "DisassociateIamInstanceProfile"}


def test_a_denied_bindings_spec_edited_to_a_nodes_profile_before_its_finalizer_runs_removes_nothing(
        api_client, start_operator, proxy, ec2, new_instance):
    node, node_association = node_instance(ec2, new_instance, "batch-worker")
    attacker = without_policy(api_client)
    operator = start_operator(namespaces=[attacker.namespace])
    attacker.create(manifest("steal", node, {"name": "web-server"}))  # not even the profile the node carries
    denied(attacker, "steal")
    operator.stop()
    attacker.delete("steal")  # the finalizer waits for the operator
    attacker.patch_spec("steal", {"iamInstanceProfile": {"name": "batch-worker"}})  # now it names the node's profile
    start_operator(namespaces=[attacker.namespace])
    wait_for(lambda: attacker.get("steal") is None, 20, "the binding released")
    assert proxy.mentioning(node) == [] and mutating_calls(proxy) == 0
    assert [a["AssociationId"] for a in live(ec2, node)] == [node_association]


def test_malformed_bookkeeping_annotations_never_stall_the_finalizer(devenv, operator, proxy, bindings, ec2, new_instance):
    instance_id = new_instance()
    bindings.create(manifest("web", instance_id))
    wait_for(lambda: bindings.is_ready("web"), what="Ready")
    kubectl(devenv, "annotate", "ipb", "web", "-n", bindings.namespace,
            "ec2.instanceprofiles.dev/finalize={", "ec2.instanceprofiles.dev/finalize.retries=x",
            "kopf.zalando.org/last-handled-configuration={")
    proxy.fail("DisassociateIamInstanceProfile", "InternalError", "try again later", status=500, times=1)  # one retry: progress kept
    bindings.delete("web")
    wait_for(lambda: bindings.get("web") is None, 20, "the binding gone despite the annotations")
    assert live(ec2, instance_id) == []
    assert proxy.injected["DisassociateIamInstanceProfile"] == 1
    [warning] = [e for e in bindings.events("web") if e.reason == "AnnotationIgnored"]
    assert warning.type == "Warning" and "ec2.instanceprofiles.dev/finalize," in warning.message


def test_a_denied_binding_created_first_never_puts_an_admitted_one_in_conflict(
        api_client, start_operator, proxy, policies, ec2, new_instance):
    squatter = without_policy(api_client)
    team = tenant(api_client, "q")
    policies(team_policy("q", "web-server"))
    instance_id = tagged_instance(ec2, new_instance, "q")
    start_operator(namespaces=[squatter.namespace, team.namespace])

    squatter.create(manifest("squat", instance_id, {"name": "web-server"}))
    denied(squatter, "squat")
    team.create(manifest("web", instance_id, {"name": "web-server"}))
    wait_for(lambda: team.is_ready("web"), what="the admitted binding Ready")
    assert "Conflict" not in team.event_reasons("web")
    [association] = live(ec2, instance_id)
    assert team.status("web")["associationId"] == association["AssociationId"]

    squatter.delete("squat")
    wait_for(lambda: squatter.get("squat") is None, what="the squatter gone")
    assert live(ec2, instance_id) == [association] and team.is_ready("web")
    assert proxy.calls["DisassociateIamInstanceProfile"] == 0


@pytest.mark.parametrize("lag", ["describes-miss-new-associations", "associating"])
def test_created_then_deleted_at_once_leaves_no_association(operator, proxy, bindings, ec2, new_instance, lag):
    if lag == "associating":
        proxy.report_associating(describes=8)  # the finalizer must wait, not take IncorrectState as gone
    else:
        proxy.hide_new_associations(5.0)  # EC2's eventual consistency: describes miss what was just made
    instances = [new_instance() for _ in range(4)]
    lifetimes = []
    for n, instance_id in enumerate(instances):
        created = time.monotonic()
        bindings.create(manifest(f"b{n}", instance_id))
        if n:  # the first goes before anything happened; the others just after their association was sent
            wait_for(lambda: proxy.calls["AssociateIamInstanceProfile"] >= n, 10, "the association sent")
        bindings.delete(f"b{n}")
        lifetimes.append(time.monotonic() - created)
    wait_for(lambda: all(bindings.get(f"b{n}") is None for n in range(len(instances))), 30, "every binding gone")
    print(f"binding lifetimes: {', '.join(f'{t:.2f} s' for t in lifetimes)}")
    assert {instance_id: live(ec2, instance_id) for instance_id in instances} == {i: [] for i in instances}


def test_a_throttled_tag_read_is_retried_never_a_denial(api_client, start_operator, proxy, policies, ec2, new_instance):
    team = tenant(api_client, "t")
    policies(team_policy("t", "web-server"))
    instance_id = tagged_instance(ec2, new_instance, "t")
    proxy.fail("DescribeInstances", "RequestLimitExceeded", "Request limit exceeded.", status=503, times=None)
    start_operator(namespaces=[team.namespace])
    team.create(manifest("web", instance_id, {"name": "web-server"}))

    throttled = wait_for(lambda: team.condition("web").get("reason") == "Throttled" and team.condition("web"), 30, "Throttled")
    assert "cannot read the instance's tags to check the policy" in throttled["message"]
    assert team.condition("web", "Reconciling")["status"] == "True" and not team.condition("web", "Stalled")
    wait_for(lambda: [e for e in team.events("web") if e.reason == "Throttled" and e.count >= 2], 30, "the Warning counted again")
    assert [e.reason for e in team.events("web")] == ["Throttled"]  # one Event, counted; never PolicyDenied
    proxy.clear()
    wait_for(lambda: team.is_ready("web"), 20, "Ready once EC2 answers")


def test_an_instance_the_tenant_may_not_use_reads_the_same_whether_it_exists_or_not(
        api_client, start_operator, proxy, policies, ec2, new_instance):
    team = tenant(api_client, "o")
    policy = policies(team_policy("o", "web-server"))
    start_operator(namespaces=[team.namespace])
    team.create(manifest("exists", new_instance(), {"name": "web-server"}))
    team.create(manifest("ghost", "i-0badc0ffee0ddf00d", {"name": "web-server"}))
    exists, ghost = denied(team, "exists"), denied(team, "ghost")
    assert exists["message"] == ghost["message"] == f"the instance lacks tag `team=o` required by InstanceProfilePolicy {policy}"
    assert [e.reason for e in team.events("exists")] == [e.reason for e in team.events("ghost")] == ["PolicyDenied"]
    assert mutating_calls(proxy) == 0

