"""Issue 17: an InstanceProfileBindingSet keeps every instance its tags select on a profile,
through one child binding per instance, on the real control plane and moto."""

from __future__ import annotations

import uuid
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from instance_profile_operator.core.api import GROUP, SET_LABEL, SET_PLURAL, VERSION
from instance_profile_operator.core.membership import child_name

from ..support.kube import Bindings, kubectl, manifest
from ..support.waiting import wait_for
from .test_lifecycle import associations
from .test_tenancy import ROLE, SECOND_ACCOUNT, policies, second_account_session, tenant  # noqa: F401 (fixture)


class Sets:
    """CRUD on InstanceProfileBindingSets in one namespace, and their children."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str):
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.bindings = Bindings(api_client, namespace)

    def create(self, name: str, tags: dict[str, str], profile: dict[str, str] | None = None, **spec: Any) -> dict:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfileBindingSet", "metadata": {"name": name},
                "spec": {"instanceSelector": {"tags": tags}, "iamInstanceProfile": profile or {"name": "web-server"}, **spec}}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, SET_PLURAL, body)

    def get(self, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, SET_PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_spec(self, name: str, spec: dict) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, SET_PLURAL, name, {"spec": spec},
                                                   _content_type="application/merge-patch+json")

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, SET_PLURAL, name,
                                                    propagation_policy="Background")

    def status(self, name: str) -> dict:
        return (self.get(name) or {}).get("status") or {}

    def condition(self, name: str, kind: str = "Ready") -> dict:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == kind), {})

    def ready(self, name: str, selected: int) -> bool:
        body = self.get(name) or {}
        status = body.get("status") or {}
        return (status.get("observedGeneration") == body["metadata"]["generation"] and status.get("selected") == selected
                and status.get("ready") == selected and self.condition(name).get("status") == "True")

    def children(self, name: str) -> dict[str, dict]:
        """Instance ID -> child binding, of the children not being deleted."""
        found = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "instanceprofilebindings",
                                                          label_selector=f"{SET_LABEL}={name}")["items"]
        return {c["spec"]["instanceId"]: c for c in found if not c["metadata"].get("deletionTimestamp")}

    def events(self, name: str) -> list[str]:
        return self.bindings.event_reasons(name)


def tagged(ec2, new_instance, **tags: str) -> str:
    instance_id = new_instance()
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return instance_id


def profile_of(ec2, instance_id: str) -> str | None:
    live = [a for a in associations(ec2, instance_id) if a["State"] in ("associating", "associated")]
    return live[0]["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1] if live else None


def unique_tag() -> str:
    return f"web-{uuid.uuid4().hex[:8]}"  # moto's instances outlive tests: each test selects its own


@pytest.fixture
def sets(api_client, namespace) -> Sets:
    return Sets(api_client, namespace)


def test_a_set_follows_its_fleet_through_scale_out_scale_in_and_a_profile_change(sets, operator, ec2, new_instance):
    role = unique_tag()
    first, second = tagged(ec2, new_instance, role=role, env="prod"), tagged(ec2, new_instance, role=role, env="prod")
    other_env = tagged(ec2, new_instance, role=role, env="dev")  # lacks one of the selector's tags
    stopped = new_instance("stopped")
    ec2.create_tags(Resources=[stopped], Tags=[{"Key": "role", "Value": role}, {"Key": "env", "Value": "prod"}])
    sets.create("web", {"role": role, "env": "prod"})

    wait_for(lambda: sets.ready("web", 3), 30, "3 children Ready")
    children = sets.children("web")
    assert set(children) == {first, second, stopped}
    child = children[first]
    assert child["metadata"]["name"] == child_name("web", first)
    [owner] = child["metadata"]["ownerReferences"]
    assert owner["kind"] == "InstanceProfileBindingSet" and owner["controller"] and owner["blockOwnerDeletion"]
    assert owner["uid"] == sets.get("web")["metadata"]["uid"]
    assert child["spec"] == {"instanceId": first, "iamInstanceProfile": {"name": "web-server"}, "deletionPolicy": "Delete"}
    assert profile_of(ec2, first) == "web-server" and profile_of(ec2, other_env) is None
    assert sets.status("web")["readyOfSelected"] == "3/3"
    assert "InstancesSelected" in sets.events("web")

    # scale-out: a tag added, an instance launched with the tags
    ec2.create_tags(Resources=[other_env], Tags=[{"Key": "env", "Value": "prod"}])
    launched = tagged(ec2, new_instance, role=role, env="prod")
    wait_for(lambda: sets.ready("web", 5), 30, "5 children Ready after scale-out")
    assert profile_of(ec2, launched) == "web-server" and profile_of(ec2, other_env) == "web-server"

    # scale-in: a tag removed (the child goes and, with deletionPolicy Delete, takes the association), an instance terminated
    ec2.delete_tags(Resources=[second], Tags=[{"Key": "role"}])
    ec2.terminate_instances(InstanceIds=[launched])
    wait_for(lambda: set(sets.children("web")) == {first, other_env, stopped} and sets.ready("web", 3), 30,
             "children of the instances that left gone")
    wait_for(lambda: profile_of(ec2, second) is None, 15, "the untagged instance's profile disassociated")
    assert "InstancesReleased" in sets.events("web")

    # a profile change reaches every child and EC2
    sets.patch_spec("web", {"iamInstanceProfile": {"name": "batch-worker"}})
    wait_for(lambda: sets.ready("web", 3) and all(profile_of(ec2, i) == "batch-worker" for i in (first, other_env, stopped)),
             30, "every instance on batch-worker")
    assert all(c["spec"]["iamInstanceProfile"] == {"name": "batch-worker"} for c in sets.children("web").values())


def test_a_child_edited_or_deleted_by_hand_is_put_back(sets, operator, ec2, new_instance):
    instance_id = tagged(ec2, new_instance, role=unique_tag())
    sets.create("web", {"role": ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])["Tags"][0]["Value"]})
    wait_for(lambda: sets.ready("web", 1), 30, "the child Ready")
    name = child_name("web", instance_id)

    sets.bindings.patch_spec(name, {"iamInstanceProfile": {"name": "batch-worker"}, "deletionPolicy": "Retain"})
    wait_for(lambda: sets.bindings.get(name)["spec"]["iamInstanceProfile"] == {"name": "web-server"}
             and sets.bindings.get(name)["spec"]["deletionPolicy"] == "Delete", 15, "the child put back")
    first_uid = sets.bindings.get(name)["metadata"]["uid"]

    sets.bindings.delete(name)
    wait_for(lambda: (sets.bindings.get(name) or {}).get("metadata", {}).get("uid") not in (None, first_uid), 30,
             "the child made again")
    wait_for(lambda: sets.ready("web", 1), 30, "Ready again")
    assert profile_of(ec2, instance_id) == "web-server"


@pytest.mark.parametrize("policy", ["Delete", "Retain"])
def test_deleting_a_set_deletes_its_children_through_garbage_collection(sets, operator, ec2, new_instance, policy):
    role = unique_tag()
    fleet = [tagged(ec2, new_instance, role=role) for _ in range(2)]
    sets.create("web", {"role": role}, deletionPolicy=policy)
    wait_for(lambda: sets.ready("web", 2), 30, "2 children Ready")
    assert {c["spec"]["deletionPolicy"] for c in sets.children("web").values()} == {policy}

    sets.delete("web")  # the operator deletes no child itself: kube-controller-manager's garbage collector does
    wait_for(lambda: sets.get("web") is None and not sets.children("web") and all(
        sets.bindings.get(child_name("web", i)) is None for i in fleet), 60, "the set and its children gone")
    expected = "web-server" if policy == "Retain" else None
    wait_for(lambda: all(profile_of(ec2, i) == expected for i in fleet), 15, f"associations after {policy}")


def test_a_child_conflicting_with_an_explicit_binding_is_counted(sets, operator, ec2, new_instance):
    role = unique_tag()
    taken, free = tagged(ec2, new_instance, role=role), tagged(ec2, new_instance, role=role)
    sets.bindings.create(manifest("explicit", taken, {"name": "batch-worker"}))
    wait_for(lambda: sets.bindings.is_ready("explicit"), 30, "the explicit binding Ready")

    sets.create("web", {"role": role})
    wait_for(lambda: sets.status("web").get("conflicts") == 1 and sets.status("web").get("ready") == 1, 30,
             "one child Ready, one in conflict")
    status = sets.status("web")
    assert status["selected"] == 2 and status["readyOfSelected"] == "1/2"
    assert [(c["name"], c["reason"]) for c in status["notReady"]] == [(child_name("web", taken), "Conflict")]
    assert sets.condition("web")["status"] == "False"
    assert profile_of(ec2, taken) == "batch-worker" and profile_of(ec2, free) == "web-server"


def test_a_tenants_set_is_denied_and_its_selector_cannot_reach_beyond_its_policy(
        api_client, start_operator, proxy, policies, ec2, new_instance):  # noqa: F811
    team_label = f"s{uuid.uuid4().hex[:6]}"
    team = tenant(api_client, team_label)
    policies({"namespaceSelector": {"matchLabels": {"team": team_label}}, "instanceProfiles": [{"name": "web-server"}],
              "instanceTags": {"team": team_label}})
    role = unique_tag()
    own = tagged(ec2, new_instance, role=role, team=team_label)
    foreign = tagged(ec2, new_instance, role=role, team="someone-else")
    start_operator(namespaces=[team.namespace])
    tenant_sets = Sets(api_client, team.namespace)

    tenant_sets.create("steal", {"role": role}, {"name": "batch-worker"})
    wait_for(lambda: tenant_sets.condition("steal").get("reason") == "PolicyDenied", 30, "the set PolicyDenied")
    assert tenant_sets.condition("steal", "Stalled")["status"] == "True"
    assert not tenant_sets.children("steal")

    tenant_sets.create("web", {"role": role})
    wait_for(lambda: tenant_sets.status("web").get("denied") == 1 and tenant_sets.status("web").get("ready") == 1, 30,
             "the own instance Ready, the foreign one denied")
    assert profile_of(ec2, own) == "web-server" and profile_of(ec2, foreign) is None
    denied_child = tenant_sets.bindings.condition(child_name("web", foreign))
    assert denied_child["reason"] == "PolicyDenied" and "lacks tag `team=" in denied_child["message"]


def test_a_set_lists_and_binds_in_a_second_account_through_a_policys_role(
        api_client, start_operator, proxy, policies, devenv, ec2, iam):  # noqa: F811
    other = second_account_session(devenv)
    other_ec2 = other.client("ec2", endpoint_url=devenv.ec2_endpoint_url)
    other_iam = other.client("iam", endpoint_url=devenv.ec2_endpoint_url)
    if not any(p["InstanceProfileName"] == "web-server" for p in other_iam.list_instance_profiles()["InstanceProfiles"]):
        other_iam.create_instance_profile(InstanceProfileName="web-server")
    role = unique_tag()
    remote = other_ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1,
                                     TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "role", "Value": role}]}]
                                     )["Instances"][0]["InstanceId"]
    local = ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1,
                              TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "role", "Value": role}]}]
                              )["Instances"][0]["InstanceId"]
    team_label = f"r{uuid.uuid4().hex[:6]}"
    team = tenant(api_client, team_label)
    policies({"namespaceSelector": {"matchLabels": {"team": team_label}},
              "instanceProfiles": [{"name": "web-server"}], "account": {"roleArn": ROLE, "externalId": "set-secret"}})
    start_operator(namespaces=[team.namespace])
    tenant_sets = Sets(api_client, team.namespace)

    tenant_sets.create("web", {"role": role})
    wait_for(lambda: tenant_sets.ready("web", 1), 30, "the remote instance's child Ready")
    assert set(tenant_sets.children("web")) == {remote}  # the first account's instance with the same tag is not selected
    assert profile_of(other_ec2, remote) == "web-server" and profile_of(ec2, local) is None
    assert tenant_sets.bindings.status(child_name("web", remote))["roleArn"] == ROLE
    assert f"arn:aws:iam::{SECOND_ACCOUNT}:" in ROLE
