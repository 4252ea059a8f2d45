"""The InstanceProfilePolicy API, served by a real kube-apiserver from crds/."""

from __future__ import annotations

import json
import uuid

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from instance_profile_operator.core.api import GROUP, VERSION
from instance_profile_operator.core.policy import parse_policy

from ..support.kube import kubectl
from ..support.waiting import wait_for

PLURAL = "instanceprofilepolicies"
ROLE = "arn:aws:iam::111122223333:role/instance-profile-operator"


@pytest.fixture(scope="module")
def policy_crd(devenv, crd) -> None:
    kubectl(devenv, "wait", "--for=condition=Established", "--timeout=30s", f"crd/{PLURAL}.{GROUP}")
    wait_for(lambda: kubectl(devenv, "explain", "ipp.spec", check=False).returncode == 0, what="the policy CRD's OpenAPI")


@pytest.fixture
def policies(api_client, policy_crd):
    """Create cluster-scoped policies with unique names; delete them afterwards."""
    custom = kubernetes.client.CustomObjectsApi(api_client)
    created: list[str] = []

    def create(spec: dict, name: str | None = None) -> dict:
        name = name or f"p-{uuid.uuid4().hex[:8]}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfilePolicy", "metadata": {"name": name}, "spec": spec}
        result = custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, field_validation="Strict")
        created.append(name)
        return result

    yield create
    for name in created:
        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def api_message(error: ApiException) -> str:
    return json.loads(error.body)["message"]


def spec(**fields) -> dict:
    return {"namespaceSelector": {}, "instanceProfiles": [{"name": "web-*"}], **fields}


def test_policy_is_cluster_scoped_with_short_name_and_category(devenv, policy_crd):
    resources = kubectl(devenv, "api-resources", "--api-group", GROUP, "-o", "wide").stdout
    line = next(l for l in resources.splitlines() if l.startswith(PLURAL))
    assert "ipp" in line and "false" in line and "aws" in line  # not namespaced


def test_explain_teaches_the_policy(devenv, policy_crd):
    def explain(path: str) -> str:
        return " ".join(kubectl(devenv, "explain", path).stdout.split())

    assert "PolicyDenied" in explain("ipp")
    text = explain("ipp.spec")
    for field, phrase in [("namespaceSelector", "kubernetes.io/metadata.name"), ("instanceProfiles", "/ included"),
                          ("instanceTags", "before a change to EC2 only"), ("regions", "Leave out to allow every region"),
                          ("account", "assumes this role with STS")]:
        assert field in text and phrase in text
    assert "sts:ExternalId" in explain("ipp.spec.account.externalId")
    assert "DoesNotExist" in explain("ipp.spec.namespaceSelector.matchExpressions.operator")


VALID = [
    ("minimal", spec()),
    ("everything", spec(namespaceSelector={"matchLabels": {"team": "a"}, "matchExpressions": [
        {"key": "env", "operator": "In", "values": ["prod"]}, {"key": "frozen", "operator": "DoesNotExist"}]},
        instanceProfiles=[{"arn": "arn:aws:iam::111122223333:instance-profile/team-a/*"}, {"name": "team-a-*"}],
        instanceTags={"team": "a"}, regions=["us-east-1", "eu-central-1"], account={"roleArn": ROLE, "externalId": "team-a:42"})),
    ("arn-wildcard-only", spec(instanceProfiles=[{"arn": "*"}])),
    ("govcloud-role", spec(account={"roleArn": "arn:aws-us-gov:iam::111122223333:role/path/operator"})),
]


@pytest.mark.parametrize("body", [pytest.param(b, id=i) for i, b in VALID])
def test_valid_policy_is_accepted_and_parses(policies, body):
    created = policies(body)
    assert parse_policy(created).name == created["metadata"]["name"]  # the evaluator reads what the API stores


INVALID = [
    ("no-selector", {"instanceProfiles": [{"name": "x"}]}, "spec.namespaceSelector: Required value"),
    ("no-profiles", {"namespaceSelector": {}}, "spec.instanceProfiles: Required value"),
    ("empty-profiles", spec(instanceProfiles=[]), "spec.instanceProfiles: Invalid value: 0: spec.instanceProfiles in body should have at least 1 items"),
    ("entry-both", spec(instanceProfiles=[{"name": "x", "arn": "arn:*"}]), "each instanceProfiles entry takes exactly one of arn or name"),
    ("entry-neither", spec(instanceProfiles=[{}]), "each instanceProfiles entry takes exactly one of arn or name"),
    ("arn-with-space", spec(instanceProfiles=[{"arn": "arn:aws:iam::1:instance-profile/a b"}]), "instanceProfiles[].arn must be an ARN pattern"),
    ("arn-not-arn", spec(instanceProfiles=[{"arn": "team-a/*"}]), "instanceProfiles[].arn must be an ARN pattern"),
    ("name-with-slash", spec(instanceProfiles=[{"name": "team/a"}]), "instanceProfiles[].name must be letters, digits"),
    ("operator-unknown", spec(namespaceSelector={"matchExpressions": [{"key": "a", "operator": "Equals"}]}),
     'supported values: "In", "NotIn", "Exists", "DoesNotExist"'),
    ("in-without-values", spec(namespaceSelector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
     "In and NotIn need at least one value"),
    ("exists-with-values", spec(namespaceSelector={"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
     "Exists and DoesNotExist take none"),
    ("region-bogus", spec(regions=["moon"]), "regions must be AWS region codes"),
    ("regions-empty", spec(regions=[]), "spec.regions in body should have at least 1 items"),
    ("regions-duplicate", spec(regions=["us-east-1", "us-east-1"]), "Duplicate value"),
    ("role-of-user", spec(account={"roleArn": "arn:aws:iam::111122223333:user/x"}), "account.roleArn must be an IAM role ARN"),
    ("role-missing", spec(account={"externalId": "abc"}), "spec.account.roleArn: Required value"),
    ("external-id-short", spec(account={"roleArn": ROLE, "externalId": "x"}), "spec.account.externalId"),
    ("external-id-space", spec(account={"roleArn": ROLE, "externalId": "a b"}), "account.externalId must be 2 to 1224"),
    ("tag-key-empty", spec(instanceTags={"": "a"}), "instanceTags keys must be 1 to 128 characters"),
    ("unknown-field", spec(namespaces=["a"]), 'unknown field "spec.namespaces"'),
]


@pytest.mark.parametrize("body,message", [pytest.param(b, m, id=i) for i, b, m in INVALID])
def test_invalid_policy_is_rejected_with_a_clear_message(policies, body, message):
    with pytest.raises(ApiException) as caught:
        policies(body)
    assert caught.value.status in (400, 422)
    assert message in api_message(caught.value)


def test_columns_summarise_the_policy(devenv, policies):
    name = policies(spec(namespaceSelector={"matchLabels": {"team": "a"}}, instanceProfiles=[{"name": "team-a-*"}, {"arn": "arn:*"}],
                         regions=["us-east-1"], account={"roleArn": ROLE}, instanceTags={"team": "a"}))["metadata"]["name"]
    table = kubectl(devenv, "get", "ipp", name).stdout.splitlines()
    assert table[0].split() == ["NAME", "NAMESPACES", "PROFILES", "ACCOUNT", "ROLE", "REGIONS", "AGE"]
    assert table[1].split()[:5] == [name, '{"team":"a"}', '[{"name":"team-a-*"},{"arn":"arn:*"}]', ROLE, '["us-east-1"]']
    wide = kubectl(devenv, "get", "ipp", name, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-2:] == ["INSTANCE", "TAGS"] and wide[1].split()[-1] == '{"team":"a"}'


def test_kubectl_apply_of_a_policy_manifest(devenv, policy_crd):
    name = f"p-{uuid.uuid4().hex[:8]}"
    manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfilePolicy", "metadata": {"name": name},
                "spec": spec(instanceTags={"team": "a"})}
    kubectl(devenv, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    try:
        listed = kubectl(devenv, "get", "aws", "-o", "name").stdout.split()
        assert f"instanceprofilepolicy.{GROUP}/{name}" in listed
    finally:
        kubectl(devenv, "delete", "ipp", name)
