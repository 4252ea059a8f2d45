"""Issue 14, point 3: one failing account or region never delays or stops the others.

Two places: the operator's own account (healthy), and a second account reached through a
policy's roleArn whose Describe calls the fault proxy answers, slowly, with UnauthorizedOperation
(as when the role's permissions are removed). Drift in the healthy place is corrected within a
resync, at start-up as during a resync, while the other fails; the failing place's binding
shows the fault, the metric counts it, and the binding recovers once the place answers again.
"""

from __future__ import annotations

from ..support.kube import Bindings, create_namespace, manifest
from ..support.waiting import wait_for
from .test_lifecycle import associations
from .test_tenancy import ROLE, policies, second_account_session  # noqa: F401 (policies: a fixture)

DESCRIBE = "DescribeIamInstanceProfileAssociations"
RESYNC = 2.0  # seconds: the e2e operator's --resync-seconds (tests/support/operator.py)
HOLD = 10.0  # seconds each failing Describe takes: longer than drift may take to be corrected


def carries_web_server(ec2, instance_id: str) -> bool:
    return any(a["State"] == "associated" and a["IamInstanceProfile"]["Arn"].endswith("/web-server")
               for a in associations(ec2, instance_id))


def test_a_failing_account_neither_delays_nor_stops_drift_correction_elsewhere_and_shows_on_its_bindings(
        api_client, start_operator, proxy, policies, devenv, namespace, ec2, new_instance):  # noqa: F811
    other = second_account_session(devenv)
    other_ec2, other_iam = (other.client(service, endpoint_url=devenv.ec2_endpoint_url) for service in ("ec2", "iam"))
    if not any(p["InstanceProfileName"] == "web-server" for p in other_iam.list_instance_profiles()["InstanceProfiles"]):
        other_iam.create_instance_profile(InstanceProfileName="web-server")
    remote_instance = other_ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    local_instance = new_instance()
    healthy = Bindings(api_client, namespace)
    failing = Bindings(api_client, create_namespace(api_client, "iso", labels={"isolation": "remote"}))
    policies({"namespaceSelector": {"matchLabels": {"isolation": "remote"}}, "instanceProfiles": [{"name": "web-server"}],
              "account": {"roleArn": ROLE}})
    operator = start_operator(namespaces=[healthy.namespace, failing.namespace])
    healthy.create(manifest("local", local_instance))
    failing.create(manifest("remote", remote_instance))
    wait_for(lambda: healthy.is_ready("local") and failing.is_ready("remote"), 30, "both bindings Ready")

    def drift_is_corrected() -> None:
        [association] = [a for a in associations(ec2, local_instance) if a["State"] == "associated"]
        ec2.disassociate_iam_instance_profile(AssociationId=association["AssociationId"])
        assert not carries_web_server(ec2, local_instance)
        wait_for(lambda: carries_web_server(ec2, local_instance), 2 * RESYNC + 2, "the healthy account's drift corrected")

    proxy.fail(DESCRIBE, "UnauthorizedOperation", "You are not authorized to perform this operation.", status=403,
               times=None, match=remote_instance, hold=HOLD)
    wait_for(lambda: proxy.injected[DESCRIBE] >= 1, 2 * RESYNC + 2, "a resync to describe the failing account")
    drift_is_corrected()  # while that describe is still held
    assert operator.total("ipo_resync_failures_total") == 0  # it has not even failed yet

    def shows_the_fault() -> bool:
        ready = failing.condition("remote")
        return ready.get("status") == "False" and ready.get("reason") == "AccessDenied"

    wait_for(shows_the_fault, HOLD + 2 * RESYNC + 5, "the failing account's binding to show the fault")
    assert operator.total("ipo_resync_failures_total", account=ROLE, region=devenv.region) >= 1
    assert operator.total("ipo_resync_failures_total", account="own") == 0
    assert "AccessDenied" in [event.reason for event in failing.events("remote")]
    drift_is_corrected()  # and while it keeps failing

    operator.stop()  # start-up: the listing describes both accounts, the fault still in place
    [association] = [a for a in associations(ec2, local_instance) if a["State"] == "associated"]
    ec2.disassociate_iam_instance_profile(AssociationId=association["AssociationId"])
    start_operator(namespaces=[healthy.namespace, failing.namespace])
    wait_for(lambda: carries_web_server(ec2, local_instance), 2 * RESYNC + 2, "drift corrected after the restart")

    proxy.clear()  # the account answers again
    wait_for(lambda: failing.is_ready("remote"), HOLD + 4 * RESYNC, "the failing account's binding Ready again")
    wait_for(lambda: healthy.is_ready("local"), what="the healthy binding Ready")
