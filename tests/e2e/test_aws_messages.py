"""Issue 14, the AWS edge: a region that does not exist, and AWS messages as tenants read them.

What a tenant reads in status and Events is stable from one retry to the next and names no
principal ARN (the operator's) nor another account's role; the operator's log has AWS's full text.
"""

from __future__ import annotations

from ..support.kube import Bindings, manifest
from ..support.waiting import wait_for
from .test_tenancy import ROLE, policies, tenant  # noqa: F401 (policies: a fixture)

OPERATOR_PRINCIPAL = "arn:aws:sts::123456789012:assumed-role/instance-profile-operator/instance-profile-operator-ipo"


def failed_with(bindings: Bindings, name: str, reason: str) -> dict:
    return wait_for(lambda: (c := bindings.condition(name)).get("reason") == reason and c, 30, f"{name} {reason}")


def test_a_region_the_partition_does_not_have_is_refused_at_once_and_others_go_on(operator, proxy, bindings: Bindings,
                                                                                  new_instance):
    bindings.create(manifest("nowhere", "i-0123456789abcdef0", region="us-east-9"))  # the CRD takes any region-shaped name
    bindings.create(manifest("here", new_instance()))
    refused = failed_with(bindings, "nowhere", "InvalidSpec")
    assert refused["status"] == "False" and bindings.condition("nowhere", "Stalled")["status"] == "True"
    assert refused["message"].startswith("UnknownRegion: region us-east-9 is not a region of the AWS partition aws")
    wait_for(lambda: bindings.is_ready("here"), 30, "the other binding Ready")
    assert not [region for (_, _, region) in proxy.signed if region == "us-east-9"]  # nothing was sent for it
    assert [e.reason for e in bindings.events("nowhere")] == ["InvalidSpec"]


def test_an_unauthorized_operation_reads_the_same_at_every_retry_and_names_no_principal(
        operator, proxy, bindings: Bindings, new_instance):
    def denial(encoded: str) -> str:
        return (f"You are not authorized to perform this operation. User: {OPERATOR_PRINCIPAL} is not authorized to "
                "perform: ec2:AssociateIamInstanceProfile on resource: arn:aws:ec2:us-east-1:123456789012:instance/* "
                f"because no identity-based policy allows the action. Encoded authorization failure message: {encoded}")

    first, later = "Q2hhbmdlc0F0RXZlcnlDYWxsMQ-_", "T3RoZXJCbG9iQXRFdmVyeUNhbGwy-_"
    proxy.fail("AssociateIamInstanceProfile", "UnauthorizedOperation", denial(first), status=403, times=1)
    proxy.fail("AssociateIamInstanceProfile", "UnauthorizedOperation", denial(later), status=403, times=None)
    bindings.create(manifest("denied", new_instance()))
    shown = failed_with(bindings, "denied", "AccessDenied")["message"]
    wait_for(lambda: proxy.injected["AssociateIamInstanceProfile"] >= 3, 30, "two retries")
    assert bindings.condition("denied")["message"] == shown  # the same text whatever the blob
    assert shown.startswith("UnauthorizedOperation: You are not authorized to perform this operation. User: <principal>")
    assert "aws sts decode-authorization-message" in shown and first not in shown and "arn:aws:sts" not in shown
    [event] = [e for e in bindings.events("denied") if e.reason == "AccessDenied"]  # one Event, counted again
    assert event.message == shown and event.count >= 2
    log = operator.log()
    assert first in log and later in log and OPERATOR_PRINCIPAL in log  # the full text, for the operator's eyes


def test_a_denied_assume_role_names_neither_the_operator_nor_the_role(
        api_client, start_operator, proxy, policies, new_instance):  # noqa: F811 (the fixture imported above)
    team = tenant(api_client, "sts-denied")
    policies({"namespaceSelector": {"matchLabels": {"team": "sts-denied"}}, "instanceProfiles": [{"name": "web-server"}],
              "account": {"roleArn": ROLE, "externalId": "sts-denied"}})
    proxy.fail("AssumeRole", "AccessDenied",
               f"User: {OPERATOR_PRINCIPAL} is not authorized to perform: sts:AssumeRole on resource: {ROLE}",
               status=403, times=None)
    operator = start_operator(namespaces=[team.namespace])
    team.create(manifest("remote", new_instance()))
    shown = failed_with(team, "remote", "AccessDenied")["message"]
    assert shown.startswith("AccessDenied: cannot assume role <role>: User: <principal> is not authorized to perform: "
                            "sts:AssumeRole on resource: <role> (ARNs withheld")
    assert ROLE not in str(team.get("remote")) and OPERATOR_PRINCIPAL not in str(team.get("remote"))
    assert ROLE in operator.log() and OPERATOR_PRINCIPAL in operator.log()
