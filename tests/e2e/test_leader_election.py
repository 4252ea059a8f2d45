"""Two replicas, one active: the Lease decides who reconciles; the standby takes over when the leader dies."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
import yaml

from instance_profile_operator.devenv import pki, webhook
from instance_profile_operator.devenv.cluster import free_port

from ..support.kube import kubectl, manifest
from ..support.waiting import wait_for
from .test_lifecycle import associations
from .test_tenancy import policies, team_policy, tenant  # noqa: F401 -- policies is a fixture

NAMESPACE = "instance-profile-operator"  # where deploy/rbac.yaml lets the operator hold its Lease
LEASE = "instance-profile-operator"
ELECTED = {"IPO_LEADER_ELECT": "true", "IPO_LEADER_ELECTION_NAMESPACE": NAMESPACE}  # default durations: 15/10/2 s


@pytest.fixture(autouse=True)
def no_lease(devenv):
    """Each test starts without a Lease (a killed holder's would keep everyone waiting 15 s)."""
    kubectl(devenv, "delete", "lease", LEASE, "-n", NAMESPACE, "--ignore-not-found")
    yield
    kubectl(devenv, "delete", "lease", LEASE, "-n", NAMESPACE, "--ignore-not-found")


def lease(devenv) -> dict:
    return json.loads(kubectl(devenv, "get", "lease", LEASE, "-n", NAMESPACE, "-o", "json").stdout)["spec"]


def leading(operator) -> bool:
    return operator.total("leader_election_master_status", name=LEASE) == 1


def assert_idle(standby) -> None:
    """A standby has made no EC2 call, written no status, recorded no Event and resynced nothing."""
    assert standby.total("leader_election_master_status", name=LEASE) == 0
    assert standby.ec2_calls() == {}
    assert standby.status_patches() == 0
    assert standby.total("ipo_events_total") == 0 and standby.total("ipo_resyncs_total") == 0
    assert standby.total("controller_runtime_reconcile_total") == 0
    assert standby.probes() == {"standby": True}


def test_standby_takes_over_after_the_leader_is_killed(devenv, start_operator, proxy, bindings, ec2, new_instance):
    first = start_operator(**ELECTED)
    wait_for(lambda: leading(first), what="the first replica to take the Lease")
    second = start_operator(**ELECTED)
    bindings.create(manifest("before", new_instance()))
    wait_for(lambda: bindings.is_ready("before"), what="Ready under the first leader")
    resyncs = first.total("ipo_resyncs_total")
    wait_for(lambda: first.total("ipo_resyncs_total") >= resyncs + 1, 10, "a resync by the leader")
    assert_idle(second)
    holder = lease(devenv)["holderIdentity"]
    assert f"became the leader: holding Lease {NAMESPACE}/{LEASE} as {holder}" in first.log()
    assert "standing by" in second.log() and "became the leader" not in second.log()
    assert first.total("controller_runtime_reconcile_total", result="success") >= 1
    assert first.total("ipo_bindings", reason="Associated", stalled="false") == 1
    assert first.total("workqueue_adds_total", name="instanceprofilebinding") >= 1
    assert first.total("ipo_ec2_request_duration_seconds_count", operation="associate_iam_instance_profile") == 1

    assert first.stop(kill=True) == -9
    killed = time.monotonic()
    instance_id = new_instance()
    bindings.create(manifest("after", instance_id))
    wait_for(lambda: bindings.is_ready("after"), 40, "Ready under the new leader", interval=0.1)
    failover = time.monotonic() - killed
    print(f"failover: SIGKILL of the leader to a new binding Ready under the standby: {failover:.1f} s")
    assert failover < 20  # lease duration 15 s + retry period 2 s + kopf's start, at most
    assert leading(second) and lease(devenv)["holderIdentity"] != holder
    assert lease(devenv)["leaseTransitions"] == 1

    resyncs = second.total("ipo_resyncs_total")
    wait_for(lambda: second.total("ipo_resyncs_total") >= resyncs + 1, 10, "a resync by the new leader")
    # no double action: one association per binding in all, the first binding's adopted as it was
    assert proxy.calls["AssociateIamInstanceProfile"] == 2
    assert second.ec2_calls().get("associate_iam_instance_profile") == 1
    assert len(associations(ec2, instance_id)) == 1
    assert second.total("ipo_bindings", reason="Associated", stalled="false") == 2


def test_a_warm_standby_only_reads_until_it_leads_then_acts_at_once(devenv, start_operator, proxy, bindings, ec2, new_instance):
    first = start_operator(**ELECTED)
    wait_for(lambda: leading(first), what="the first replica to take the Lease")
    second = start_operator(**ELECTED)
    bindings.create(manifest("before", new_instance()))
    wait_for(lambda: bindings.is_ready("before"), what="Ready under the first leader")
    wait_for(lambda: second.total("ipo_bindings", reason="Associated") == 1, what="the standby to know the leader's status")
    assert first.stop(kill=True) == -9  # its Lease stays held until it expires: the standby stands by meanwhile
    instance_id = new_instance()
    bindings.create(manifest("during", instance_id))
    created = bindings.get("during")
    wait_for(lambda: second.total("ipo_bindings", reason="Unknown") == 1, what="the standby to know the new binding")
    assert not leading(second), "the killed leader's Lease expired before the standby was checked"
    assert_idle(second)
    unchanged = bindings.get("during")  # no replica wrote to it: no finalizer, no status
    assert unchanged["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert "finalizers" not in unchanged["metadata"] and "status" not in unchanged
    assert proxy.calls["AssociateIamInstanceProfile"] == 1  # the first leader's, for "before"

    wait_for(lambda: leading(second), 30, "the standby to take the expired Lease", interval=0.1)
    took = time.monotonic()
    wait_for(lambda: bindings.is_ready("during"), 10, "Ready once the standby leads", interval=0.1)
    print(f"warm takeover: Lease taken to the binding created on standby Ready: {time.monotonic() - took:.1f} s")
    assert "taking over 2 bindings known on standby" in second.log()
    assert [a["AssociationId"] for a in associations(ec2, instance_id)] == [bindings.status("during")["associationId"]]
    assert proxy.calls["AssociateIamInstanceProfile"] == 2  # "before" adopted as it was, "during" associated once


def test_graceful_stop_releases_the_lease_for_an_immediate_takeover(devenv, start_operator, bindings, new_instance):
    first = start_operator(**ELECTED)
    wait_for(lambda: leading(first), what="the first replica to take the Lease")
    second = start_operator(**ELECTED)
    holder = lease(devenv)["holderIdentity"]
    assert first.stop() == 0
    stopped = time.monotonic()
    assert lease(devenv)["holderIdentity"] in ("", *[line.rsplit(" as ", 1)[-1] for line in second.log().splitlines()
                                                       if "became the leader" in line])
    assert f"released Lease {NAMESPACE}/{LEASE}" in first.log() and holder in first.log()
    bindings.create(manifest("handover", new_instance()))
    wait_for(lambda: bindings.is_ready("handover"), 15, "Ready under the new leader", interval=0.1)
    print(f"handover after SIGTERM: {time.monotonic() - stopped:.1f} s")
    assert time.monotonic() - stopped < 8  # a retry period and kopf's start, not a lease duration
    assert leading(second)


def test_a_standby_stops_at_once_on_sigterm(start_operator):
    first = start_operator(**ELECTED)
    wait_for(lambda: leading(first), what="the first replica to take the Lease")
    second = start_operator(**ELECTED)
    assert_idle(second)
    started = time.monotonic()
    assert second.stop() == 0
    assert time.monotonic() - started < 3
    assert leading(first)


def test_a_leader_that_loses_its_lease_exits_non_zero(devenv, start_operator):
    operator = start_operator(**ELECTED)
    wait_for(lambda: leading(operator), what="the replica to take the Lease")
    kubectl(devenv, "patch", "lease", LEASE, "-n", NAMESPACE, "--type=merge", "-p",
            json.dumps({"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 15}}))
    assert operator.process.wait(10) == 1
    assert "leader election lost" in operator.log()


def test_the_standby_serves_admission_and_stays_otherwise_idle(
        devenv, api_client, start_operator, policies, new_instance, tmp_path):  # noqa: F811
    team = tenant(api_client, "s")
    policies(team_policy("s", "web-server"))
    credentials = pki.generate(tmp_path / "webhook")
    served = {"IPO_WEBHOOK_CERT_FILE": str(credentials.serving_cert), "IPO_WEBHOOK_KEY_FILE": str(credentials.serving_key)}
    first = start_operator(**ELECTED, **served, IPO_WEBHOOK_ADDRESS=f"127.0.0.1:{free_port()}")
    wait_for(lambda: leading(first), what="the first replica to take the Lease")
    standby_address = f"127.0.0.1:{free_port()}"
    second = start_operator(**ELECTED, **served, IPO_WEBHOOK_ADDRESS=standby_address)
    kubectl(devenv, "apply", "-f", "-", input=yaml.safe_dump(webhook.configuration(standby_address, credentials.ca_cert)))
    try:
        def apply(name: str, profile: str, *flags: str):
            body = yaml.safe_dump(manifest(name, new_instance(), {"name": profile}))
            return kubectl(devenv, "apply", "-n", team.namespace, *flags, "-f", "-", input=body, check=False)

        wait_for(lambda: "denied the request" in apply("probe", "batch-worker", "--dry-run=server").stderr,
                 what="the standby to judge a binding")
        refused = apply("wrong-profile", "batch-worker")
        assert refused.returncode != 0 and "instance profile batch-worker is not allowed" in refused.stderr
        allowed = apply("allowed", "web-server")
        assert allowed.returncode == 0, allowed.stderr
        assert_idle(second)
        assert not leading(second)
        with urllib.request.urlopen(f"http://127.0.0.1:{second.metrics_port}/readyz", timeout=2) as response:
            assert response.status == 200  # ready: it answers what the webhook Service sends it
    finally:
        kubectl(devenv, "delete", "validatingwebhookconfiguration", webhook.NAME, "--ignore-not-found")
