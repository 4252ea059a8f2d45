"""The InstanceProfileBinding API, served by a real kube-apiserver from crds/."""

from __future__ import annotations

import json
import threading

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from instance_profile_operator.core.api import GROUP, PLURAL, VERSION

from ..support.kube import REPO, Bindings, kubectl, manifest

GOOD_ID = "i-0123456789abcdef0"
WEB = {"name": "web-server"}


def test_crd_is_served_with_short_name_and_category(devenv, crd):
    resources = kubectl(devenv, "api-resources", "--api-group", GROUP, "-o", "wide").stdout
    line = next(l for l in resources.splitlines() if l.startswith(PLURAL))
    assert "ipb" in line and f"{GROUP}/{VERSION}" in line and "true" in line  # namespaced
    assert "aws" in line  # category
    assert kubectl(devenv, "get", "aws", "-A").returncode == 0


def words(text: str) -> str:
    return " ".join(text.split())


def api_message(error: ApiException) -> str:
    return json.loads(error.body)["message"]


def test_explain_teaches_the_api(devenv, crd):
    text = words(kubectl(devenv, "explain", "ipb.spec").stdout)
    for field, phrase in [("instanceId", "8 or 17 lowercase hexadecimal"), ("deletionPolicy", "Retain"),
                         ("region", "Defaults to the operator's configured"), ("iamInstanceProfile", "exactly one of arn or name")]:
        assert field in text and phrase in text
    assert "Reconciling is True" in words(kubectl(devenv, "explain", "ipb.status.conditions").stdout)


INVALID = [
    ("bad-characters", {"instanceId": "i-XYZ", "iamInstanceProfile": WEB}, "instanceId must be \"i-\" followed by 8 or 17"),
    ("uppercase-hex", {"instanceId": "i-0123ABCD", "iamInstanceProfile": WEB}, "instanceId must be"),
    ("nine-digits", {"instanceId": "i-012345678", "iamInstanceProfile": WEB}, "instanceId must be"),
    ("no-prefix", {"instanceId": "0123456789abcdef0", "iamInstanceProfile": WEB}, "instanceId must be"),
    ("too-long", {"instanceId": "i-0123456789abcdef01", "iamInstanceProfile": WEB}, "spec.instanceId"),
    ("instance-missing", {"iamInstanceProfile": WEB}, "spec.instanceId: Required value"),
    ("profile-missing", {"instanceId": GOOD_ID}, "spec.iamInstanceProfile: Required value"),
    ("profile-empty", {"instanceId": GOOD_ID, "iamInstanceProfile": {}}, "iamInstanceProfile needs one of arn or name"),
    ("profile-both", {"instanceId": GOOD_ID, "iamInstanceProfile": {"name": "web", "arn": "arn:aws:iam::123456789012:instance-profile/web"}},
     "iamInstanceProfile takes arn or name, not both"),
    ("arn-of-a-role", {"instanceId": GOOD_ID, "iamInstanceProfile": {"arn": "arn:aws:iam::123456789012:role/web"}},
     "iamInstanceProfile.arn must look like"),
    ("arn-short-account", {"instanceId": GOOD_ID, "iamInstanceProfile": {"arn": "arn:aws:iam::12345678901:instance-profile/web"}},
     "iamInstanceProfile.arn must look like"),
    ("arn-other-service", {"instanceId": GOOD_ID, "iamInstanceProfile": {"arn": "arn:aws:ec2::123456789012:instance-profile/web"}},
     "iamInstanceProfile.arn must look like"),
    ("name-with-space", {"instanceId": GOOD_ID, "iamInstanceProfile": {"name": "web server"}}, "iamInstanceProfile.name must be 1 to 128"),
    ("name-too-long", {"instanceId": GOOD_ID, "iamInstanceProfile": {"name": "w" * 129}}, "spec.iamInstanceProfile.name"),
    ("name-empty", {"instanceId": GOOD_ID, "iamInstanceProfile": {"name": ""}}, "iamInstanceProfile.name must be 1 to 128"),
    ("region-bogus", {"instanceId": GOOD_ID, "iamInstanceProfile": WEB, "region": "moon"}, "region must be an AWS region code"),
    ("policy-unknown", {"instanceId": GOOD_ID, "iamInstanceProfile": WEB, "deletionPolicy": "Keep"}, 'supported values: "Delete", "Retain"'),
    ("unknown-field", {"instanceId": GOOD_ID, "iamInstanceProfile": WEB, "instanceProfile": "web"}, 'unknown field "spec.instanceProfile"'),
]


@pytest.mark.parametrize("spec,message", [pytest.param(s, m, id=i) for i, s, m in INVALID])
def test_invalid_binding_is_rejected_with_a_clear_message(bindings: Bindings, spec, message):
    body = {**manifest("bad", GOOD_ID), "spec": spec}
    with pytest.raises(ApiException) as caught:
        bindings.create(body)
    assert caught.value.status in (400, 422)
    assert message in api_message(caught.value)
    assert bindings.get("bad") is None


def test_binding_without_spec_is_rejected(bindings: Bindings):
    body = manifest("bad", GOOD_ID)
    del body["spec"]
    with pytest.raises(ApiException) as caught:
        bindings.create(body)
    assert "spec: Required value" in api_message(caught.value)


def test_kubectl_apply_rejects_unknown_fields(devenv, namespace):
    text = yaml.safe_dump({**manifest("typo", GOOD_ID), "spec": {"instanceId": GOOD_ID, "iamInstanceProfile": WEB, "deletePolicy": "Retain"}})
    done = kubectl(devenv, "apply", "-n", namespace, "-f", "-", input=text, check=False)
    assert done.returncode != 0 and 'unknown field "spec.deletePolicy"' in done.stderr


VALID = [
    ("arn-with-path", {"instanceId": GOOD_ID, "iamInstanceProfile": {"arn": "arn:aws:iam::123456789012:instance-profile/team-a/apps/web"}}),
    ("arn-china", {"instanceId": GOOD_ID, "iamInstanceProfile": {"arn": "arn:aws-cn:iam::123456789012:instance-profile/web"}, "region": "cn-north-1"}),
    ("arn-govcloud", {"instanceId": GOOD_ID, "iamInstanceProfile": {"arn": "arn:aws-us-gov:iam::123456789012:instance-profile/web"}, "region": "us-gov-west-1"}),
    ("legacy-8-digit-id", {"instanceId": "i-0123abcd", "iamInstanceProfile": WEB}),
    ("name-only", {"instanceId": GOOD_ID, "iamInstanceProfile": {"name": "Web+Server=1,2.3@corp_-x"}}),
    ("retain-in-region", {"instanceId": GOOD_ID, "iamInstanceProfile": WEB, "region": "eu-central-1", "deletionPolicy": "Retain"}),
]


@pytest.mark.parametrize("spec", [pytest.param(s, id=i) for i, s in VALID])
def test_valid_binding_is_accepted(bindings: Bindings, spec):
    created = bindings.create({**manifest("good", GOOD_ID), "spec": spec})
    assert created["spec"]["instanceId"] == spec["instanceId"]
    assert created["spec"]["deletionPolicy"] == spec.get("deletionPolicy", "Delete")  # defaulted


def record_region(bindings: Bindings, name: str, region: str) -> None:
    """What the operator writes once it manages a binding: the region it resolved."""
    bindings.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, bindings.namespace, PLURAL, name, {"status": {"region": region}},
        _content_type="application/merge-patch+json")


ANOTHER_REGION = "create a new InstanceProfileBinding for an instance in another region"


@pytest.mark.parametrize("spec,status_region,change,message", [
    pytest.param({}, None, {"instanceId": "i-0123abcd"}, "instanceId is immutable: create a new InstanceProfileBinding", id="instance"),
    pytest.param({"region": "us-east-1"}, "us-east-1", {"region": "eu-west-1"},
                 f"spec.region is immutable (it is us-east-1): {ANOTHER_REGION}", id="region-changed"),
    pytest.param({"region": "us-east-1"}, "us-east-1", {"region": None},
                 f"spec.region is immutable (it is us-east-1): {ANOTHER_REGION}", id="region-removed"),
    pytest.param({}, "us-east-1", {"region": "eu-west-1"},
                 f"spec.region may only be set to the region this binding already uses, us-east-1: {ANOTHER_REGION}",
                 id="region-added-other-than-resolved"),
    pytest.param({}, None, {"region": "us-east-1"},
                 "spec.region cannot be added before the operator has recorded the binding's region", id="region-added-unresolved"),
])
def test_identity_of_the_instance_is_immutable(bindings: Bindings, spec, status_region, change, message):
    bindings.create(manifest("pinned", GOOD_ID, **spec))
    if status_region:
        record_region(bindings, "pinned", status_region)
    with pytest.raises(ApiException) as caught:
        bindings.patch_spec("pinned", change)
    assert message in api_message(caught.value)
    assert bindings.get("pinned")["spec"] == {"instanceId": GOOD_ID, "iamInstanceProfile": WEB, "deletionPolicy": "Delete", **spec}


def test_region_may_be_set_to_the_one_the_binding_already_uses(bindings: Bindings):
    bindings.create(manifest("resolved", GOOD_ID))  # no spec.region: the operator's default applies
    record_region(bindings, "resolved", "us-east-1")
    assert bindings.patch_spec("resolved", {"region": "us-east-1"})["spec"]["region"] == "us-east-1"
    assert bindings.patch_spec("resolved", {"region": "us-east-1"})["metadata"]["generation"] == 2  # a no-op again


def test_spec_changes_bump_generation_and_status_writes_do_not(bindings: Bindings):
    bindings.create(manifest("gen", GOOD_ID))
    assert bindings.get("gen")["metadata"]["generation"] == 1
    bindings.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, bindings.namespace, PLURAL, "gen", {"status": {"state": "associated", "observedGeneration": 1}},
        _content_type="application/merge-patch+json")
    after_status = bindings.get("gen")
    assert after_status["status"]["state"] == "associated" and after_status["metadata"]["generation"] == 1
    bindings.patch_spec("gen", {"iamInstanceProfile": {"name": "batch-worker"}})
    assert bindings.get("gen")["metadata"]["generation"] == 2
    # the main resource ignores status; the status subresource ignores spec
    bindings.custom.patch_namespaced_custom_object(
        GROUP, VERSION, bindings.namespace, PLURAL, "gen", {"status": {"state": "disassociated"}},
        _content_type="application/merge-patch+json")
    assert bindings.get("gen")["status"]["state"] == "associated"


def test_status_rejects_values_outside_the_schema(bindings: Bindings):
    bindings.create(manifest("st", GOOD_ID))
    with pytest.raises(ApiException) as caught:
        bindings.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, bindings.namespace, PLURAL, "st", {"status": {"state": "exploded"}},
            _content_type="application/merge-patch+json")
    assert 'supported values: "associating", "associated", "disassociating", "disassociated"' in api_message(caught.value)


def test_finalizer_holds_deletion_until_removed(bindings: Bindings):
    body = manifest("held", GOOD_ID)
    body["metadata"]["finalizers"] = ["example.com/hold"]
    bindings.create(body)
    bindings.delete("held")
    held = bindings.get("held")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    bindings.custom.patch_namespaced_custom_object(
        GROUP, VERSION, bindings.namespace, PLURAL, "held", {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json")
    assert bindings.get("held") is None


def test_watch_sees_every_change(api_client, bindings: Bindings):
    initial = bindings.custom.list_namespaced_custom_object(GROUP, VERSION, bindings.namespace, PLURAL)
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def watch() -> None:
        stream = kubernetes.watch.Watch()
        for event in stream.stream(bindings.custom.list_namespaced_custom_object, GROUP, VERSION, bindings.namespace, PLURAL,
                                   resource_version=initial["metadata"]["resourceVersion"], timeout_seconds=20):
            seen.append((event["type"], event["object"]["metadata"].get("generation")))
            if event["type"] == "DELETED":
                stream.stop()
        done.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    bindings.create(manifest("watched", GOOD_ID))
    bindings.patch_spec("watched", {"iamInstanceProfile": {"name": "batch-worker"}})
    bindings.delete("watched")
    assert done.wait(25), f"watch saw only {seen}"
    assert seen == [("ADDED", 1), ("MODIFIED", 2), ("DELETED", 2)]


def test_kubectl_get_shows_the_columns(devenv, bindings: Bindings):
    bindings.create(manifest("cols", GOOD_ID, {"arn": "arn:aws:iam::123456789012:instance-profile/team-a/web"}))
    bindings.custom.patch_namespaced_custom_object_status(GROUP, VERSION, bindings.namespace, PLURAL, "cols", {"status": {
        "state": "associated", "associationId": "iip-assoc-0123456789abcdef0", "region": "us-east-1",
        "account": "123456789012", "instanceProfile": {"arn": "arn:aws:iam::123456789012:instance-profile/team-a/web", "name": "web", "id": "AIPA1"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Associated", "message": "carries web",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
    }}, _content_type="application/merge-patch+json")
    header, row = kubectl(devenv, "get", "ipb", "-n", bindings.namespace).stdout.splitlines()
    assert header.split() == ["NAME", "INSTANCE", "ACCOUNT", "PROFILE", "CURRENT", "STATE", "READY", "REASON", "AGE"]
    assert row.split()[:8] == ["cols", GOOD_ID, "123456789012", "arn:aws:iam::123456789012:instance-profile/team-a/web",
                               "web", "associated", "True", "Associated"]
    wide_header, wide_row = kubectl(devenv, "get", "ipb", "-n", bindings.namespace, "-o", "wide").stdout.splitlines()
    assert wide_header.split()[-3:] == ["ASSOCIATION", "REGION", "MESSAGE"]
    assert wide_row.split()[-4:] == ["iip-assoc-0123456789abcdef0", "us-east-1", "carries", "web"]
    everywhere = kubectl(devenv, "get", "ipb", "-A").stdout
    assert everywhere.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"] and bindings.namespace in everywhere


def test_examples_are_valid(devenv, namespace):
    for path in sorted(p for p in (REPO / "examples").rglob("*.yaml") if "tenancy" not in p.parts):  # its own test
        done = kubectl(devenv, "apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
        assert done.returncode == 0, f"{path.name}: {done.stderr}"
