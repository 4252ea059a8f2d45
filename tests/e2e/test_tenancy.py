"""Issue 7: who may bind which instance profile to which instance, in which AWS account.

Run under the shipped RBAC with policy enforcement on (the default), against moto behind the
fault proxy, which counts every AWS action the operator sends.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Iterator

import boto3
import pytest
import yaml

from instance_profile_operator.core.api import GROUP, VERSION
from instance_profile_operator.devenv import pki, webhook
from instance_profile_operator.devenv.cluster import free_port

from ..support.kube import Bindings, create_namespace, kubectl, manifest
from ..support.waiting import wait_for
from .test_lifecycle import associations

MUTATIONS = ("AssociateIamInstanceProfile", "ReplaceIamInstanceProfileAssociation", "DisassociateIamInstanceProfile")
SECOND_ACCOUNT = "222233334444"
ROLE = f"arn:aws:iam::{SECOND_ACCOUNT}:role/instance-profile-operator"


def mutating_calls(proxy) -> int:
    return sum(proxy.calls[action] for action in MUTATIONS)


@pytest.fixture
def policies(devenv) -> Iterator:
    """Factory: create an InstanceProfilePolicy (a unique name); all are deleted afterwards."""
    created: list[str] = []

    def create(spec: dict) -> str:
        name = f"p-{uuid.uuid4().hex[:8]}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfilePolicy", "metadata": {"name": name}, "spec": spec}
        kubectl(devenv, "apply", "-f", "-", input=json.dumps(body))
        created.append(name)
        return name

    yield create
    for name in created:
        kubectl(devenv, "delete", "ipp", name, "--ignore-not-found")


def tenant(api_client, team: str) -> Bindings:
    return Bindings(api_client, create_namespace(api_client, f"team-{team}", labels={"team": team}))


def tagged_instance(ec2, new_instance, team: str) -> str:
    instance_id = new_instance()
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "team", "Value": team}])
    return instance_id


def team_policy(team: str, profile: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {"team": team}}, "instanceProfiles": [{"name": profile}],
            "instanceTags": {"team": team}}


def denied(bindings: Bindings, name: str) -> dict:
    return wait_for(lambda: bindings.condition(name).get("reason") == "PolicyDenied" and bindings.condition(name),
                    what=f"{name} PolicyDenied")


def test_a_tenant_cannot_attach_another_teams_profile_nor_touch_its_instances(
        api_client, start_operator, proxy, policies, ec2, new_instance):
    team_a, team_b = tenant(api_client, "a"), tenant(api_client, "b")
    policies(team_policy("a", "web-server"))
    policies(team_policy("b", "batch-worker"))
    instance_a, instance_b = tagged_instance(ec2, new_instance, "a"), tagged_instance(ec2, new_instance, "b")
    start_operator(namespaces=[team_a.namespace, team_b.namespace])

    team_a.create(manifest("own", instance_a, {"name": "web-server"}))
    wait_for(lambda: team_a.is_ready("own"), what="team A's own binding Ready")
    before = mutating_calls(proxy)
    team_b.create(manifest("steal-profile", instance_b, {"name": "web-server"}))
    team_b.create(manifest("touch-instance", instance_a, {"name": "batch-worker"}))

    profile = denied(team_b, "steal-profile")
    assert profile["status"] == "False"
    assert f"instance profile web-server is not allowed in namespace {team_b.namespace}" in profile["message"]
    instance = denied(team_b, "touch-instance")
    assert "the instance lacks tag `team=b`" in instance["message"]
    for name in ("steal-profile", "touch-instance"):
        assert team_b.condition(name, "Stalled")["status"] == "True"
        assert not team_b.condition(name, "Reconciling")
        assert [(e.type, e.reason) for e in team_b.events(name)] == [("Warning", "PolicyDenied")]
    assert mutating_calls(proxy) == before  # nothing reached EC2 for either
    assert associations(ec2, instance_b) == []
    [kept] = associations(ec2, instance_a)
    assert kept["IamInstanceProfile"]["Arn"].endswith("/web-server")  # team A's association untouched


def test_a_binding_waits_for_a_policy_then_loses_it_without_losing_its_association(
        api_client, start_operator, policies, devenv, ec2, new_instance):
    team = tenant(api_client, "c")
    start_operator(namespaces=[team.namespace])
    instance_id = new_instance()
    team.create(manifest("web", instance_id))
    waiting = denied(team, "web")
    assert waiting["message"] == (f"no InstanceProfilePolicy selects namespace {team.namespace}; see docs/tenancy.md")

    policy = policies({"namespaceSelector": {"matchLabels": {"team": "c"}}, "instanceProfiles": [{"name": "web-*"}]})
    wait_for(lambda: team.is_ready("web"), 15, "Ready once a policy allows it")
    association_id = team.status("web")["associationId"]

    kubectl(devenv, "delete", "ipp", policy)
    denied(team, "web")
    assert team.condition("web", "Stalled")["status"] == "True"
    [still] = associations(ec2, instance_id)  # the operator never removes what it cannot show it should
    assert still["AssociationId"] == association_id and team.status("web")["associationId"] == association_id

    team.delete("web")  # deleting the binding still cleans up what it manages
    wait_for(lambda: team.get("web") is None, what="the binding gone")
    assert [a for a in associations(ec2, instance_id) if a["State"] != "disassociated"] == []


def test_admission_rejects_what_no_policy_allows_when_the_webhook_is_on(
        api_client, start_operator, proxy, policies, devenv, ec2, new_instance, tmp_path):
    team = tenant(api_client, "d")
    policies(team_policy("d", "web-server"))
    credentials = pki.generate(tmp_path / "webhook")
    address = f"127.0.0.1:{free_port()}"
    operator = start_operator(namespaces=[team.namespace], IPO_WEBHOOK_ADDRESS=address,
                   IPO_WEBHOOK_CERT_FILE=str(credentials.serving_cert), IPO_WEBHOOK_KEY_FILE=str(credentials.serving_key))
    kubectl(devenv, "apply", "-f", "-", input=yaml.safe_dump(webhook.configuration(address, credentials.ca_cert)))
    try:
        other_team = tagged_instance(ec2, new_instance, "e")

        def apply(name: str, instance_id: str, profile: str, *flags: str):
            body = yaml.safe_dump(manifest(name, instance_id, {"name": profile}))
            return kubectl(devenv, "apply", "-n", team.namespace, *flags, "-f", "-", input=body, check=False)

        wait_for(lambda: "denied the request" in apply("probe", other_team, "batch-worker", "--dry-run=server").stderr,
                 what="the API server to call the webhook")
        wrong_profile = apply("wrong-profile", tagged_instance(ec2, new_instance, "d"), "batch-worker")
        assert wrong_profile.returncode != 0 and "instance profile batch-worker is not allowed" in wrong_profile.stderr
        assert team.get("wrong-profile") is None
        refused = wait_for(lambda: [line for line in operator.log().splitlines() if "refused the request" in line],
                           what="the refusal in the log")
        assert "[INFO" in refused[-1] and "instance profile batch-worker is not allowed" in refused[-1]
        assert "[ERROR" not in operator.log()  # a refusal is the webhook working, not failing
        # the webhook reads no EC2: a verdict that hangs on the instance's tags is the reconcile's, before any change
        wrong_instance = apply("wrong-instance", other_team, "web-server")
        assert wrong_instance.returncode == 0, wrong_instance.stderr
        assert "the instance lacks tag `team=d`" in denied(team, "wrong-instance")["message"]
        assert mutating_calls(proxy) == 0
        allowed = apply("allowed", tagged_instance(ec2, new_instance, "d"), "web-server")
        assert allowed.returncode == 0, allowed.stderr
        wait_for(lambda: team.is_ready("allowed"), what="the allowed binding Ready")
        denied_set = kubectl(devenv, "apply", "-n", team.namespace, "-f", "-", check=False, input=yaml.safe_dump({
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfileBindingSet", "metadata": {"name": "fleet"},
            "spec": {"instanceSelector": {"tags": {"team": "d"}}, "iamInstanceProfile": {"name": "batch-worker"}}}))
        assert denied_set.returncode != 0 and (
            f"denied by InstanceProfilePolicy: instance profile batch-worker is not allowed in namespace {team.namespace}"
            in denied_set.stderr), denied_set.stderr
    finally:
        kubectl(devenv, "delete", "validatingwebhookconfiguration", webhook.NAME, "--ignore-not-found")


def second_account_session(devenv) -> boto3.Session:
    """The role in the second account, assumed through moto's STS."""
    sts = boto3.client("sts", endpoint_url=devenv.ec2_endpoint_url, region_name=devenv.region,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    issued = sts.assume_role(RoleArn=ROLE, RoleSessionName="tests")["Credentials"]
    return boto3.Session(aws_access_key_id=issued["AccessKeyId"], aws_secret_access_key=issued["SecretAccessKey"],
                         aws_session_token=issued["SessionToken"], region_name=devenv.region)


def same_instance_id_in_both_accounts(devenv, ec2, other_ec2) -> str:
    """moto draws IDs from a seeded generator: the same seed before each launch gives one ID twice."""
    seed = 1000 + int(uuid.uuid4().int % 100000)
    for client in (ec2, other_ec2):  # an account's first launch draws more (its default VPC): not in the race
        client.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1)
    launched = []
    for client in (ec2, other_ec2):
        urllib.request.urlopen(urllib.request.Request(f"{devenv.ec2_endpoint_url}/moto-api/seed?a={seed}", method="POST"))
        launched.append(client.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"])
    assert launched[0] == launched[1], launched
    return launched[0]


def test_a_policy_naming_a_role_in_a_second_account_acts_there_and_never_in_the_first(
        api_client, start_operator, operator_kubeconfig, proxy, policies, devenv, ec2, iam):
    other = second_account_session(devenv)
    other_ec2 = other.client("ec2", endpoint_url=devenv.ec2_endpoint_url)
    other_iam = other.client("iam", endpoint_url=devenv.ec2_endpoint_url)
    if not any(p["InstanceProfileName"] == "web-server" for p in other_iam.list_instance_profiles()["InstanceProfiles"]):
        other_iam.create_instance_profile(InstanceProfileName="web-server")
    instance_id = same_instance_id_in_both_accounts(devenv, ec2, other_ec2)
    team = tenant(api_client, "x")
    policies({"namespaceSelector": {"matchLabels": {"team": "x"}}, "instanceProfiles": [{"name": "web-server"}],
              "account": {"roleArn": ROLE, "externalId": "shared-secret-x"}})
    operator = start_operator(namespaces=[team.namespace])

    team.create(manifest("remote", instance_id))
    wait_for(lambda: team.is_ready("remote"), 30, "Ready in the second account")
    [remote] = other_ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance_id]}])["IamInstanceProfileAssociations"]
    assert remote["IamInstanceProfile"]["Arn"] == f"arn:aws:iam::{SECOND_ACCOUNT}:instance-profile/web-server"
    assert associations(ec2, instance_id) == []  # the same-named instance of the first account is untouched
    status = team.status("remote")
    assert status["roleArn"] == ROLE and status["associationId"] == remote["AssociationId"]
    assert proxy.calls["AssumeRole"] >= 1

    # steady state with policies in force: one Describe per account and region each resync, nothing else
    resyncs = operator.metrics()["ipo_resyncs_total"]
    wait_for(lambda: operator.metrics()["ipo_resyncs_total"] >= resyncs + 1, what="a resync")
    proxy.reset_counts()
    wait_for(lambda: operator.metrics()["ipo_resyncs_total"] >= resyncs + 4, what="three more resyncs")
    counted = dict(proxy.calls)
    assert set(counted) == {"DescribeIamInstanceProfileAssociations"} and 3 <= counted["DescribeIamInstanceProfileAssociations"] <= 4

    team.delete("remote")
    wait_for(lambda: team.get("remote") is None, what="the binding gone")
    left = other_ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance_id]}])["IamInstanceProfileAssociations"]
    assert [a for a in left if a["State"] != "disassociated"] == []


def test_disabled_enforcement_allows_every_binding_in_the_operators_account(api_client, start_operator, new_instance):
    team = tenant(api_client, "free")  # no policy selects it
    start_operator(namespaces=[team.namespace], IPO_POLICY_ENFORCEMENT="Disabled")
    team.create(manifest("web", new_instance()))
    wait_for(lambda: team.is_ready("web"), what="Ready without any policy")
    assert "roleArn" not in team.status("web")
