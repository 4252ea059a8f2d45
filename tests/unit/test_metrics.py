"""The metrics: the decided names, what feeds them, and how they are served."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from instance_profile_operator.core.tenancy import Tenancy
from instance_profile_operator.bindings.controller import Controller
from instance_profile_operator.bindings.registry import Registry
from instance_profile_operator.devenv.cluster import free_port
from instance_profile_operator.aws.ec2 import Ec2Gateway
from instance_profile_operator.core.model import OWN_ACCOUNT, Binding
from instance_profile_operator.core.faults import AwsFault
from instance_profile_operator.runtime.metrics import CONTROLLER, LEASE, Metrics, bindings_by_state, reconcile_result, serve
from instance_profile_operator.settings import Settings
from instance_profile_operator.runtime.workqueue import WorkQueue

from .test_workqueue import FakeClock

DECIDED = {  # CONTRACT.md: family name -> type
    "controller_runtime_reconcile": "counter",
    "controller_runtime_reconcile_errors": "counter",
    "controller_runtime_reconcile_time_seconds": "histogram",
    "controller_runtime_active_workers": "gauge",
    "controller_runtime_max_concurrent_reconciles": "gauge",
    "workqueue_depth": "gauge",
    "workqueue_adds": "counter",
    "workqueue_retries": "counter",
    "workqueue_queue_duration_seconds": "histogram",
    "workqueue_work_duration_seconds": "histogram",
    "workqueue_unfinished_work_seconds": "gauge",
    "workqueue_longest_running_processor_seconds": "gauge",
    "leader_election_master_status": "gauge",
    "ipo_ec2_requests": "counter",
    "ipo_ec2_request_duration_seconds": "histogram",
    "ipo_bindings": "gauge",
    "ipo_status_patches": "counter",
    "ipo_events": "counter",
    "ipo_resyncs": "counter",
    "ipo_resync_failures": "counter",
    # prometheus_client's process and platform collectors
    "process_virtual_memory_bytes": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_cpu_seconds": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "python_info": "gauge",
}


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, labels in exposition order) -> value, parsed by prometheus_client's own parser."""
    return {(s.name, tuple(s.labels.items())): s.value
            for family in text_string_to_metric_families(metrics.render().decode()) for s in family.samples}


def value(metrics: Metrics, name: str, /, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(labels.items())))


def test_exactly_the_decided_families_are_exposed():
    families = {f.name: f.type for f in text_string_to_metric_families(Metrics().render().decode())}
    assert families == DECIDED


def test_fresh_metrics_start_at_zero_and_on_standby():
    metrics = Metrics()
    for result in ("success", "error", "requeue", "requeue_after"):
        assert value(metrics, "controller_runtime_reconcile_total", controller=CONTROLLER, result=result) == 0
    assert value(metrics, "leader_election_master_status", name=LEASE) == 0
    assert value(metrics, "workqueue_depth", name=CONTROLLER) == 0
    for name in ("ipo_status_patches_total", "ipo_events_total", "ipo_resyncs_total"):
        assert value(metrics, name) == 0
    assert not [key for key in samples(metrics) if key[0].startswith(("ipo_ec2_requests", "ipo_bindings"))]
    assert not [key for key in samples(metrics) if key[0].endswith("_created")]


def test_each_metrics_has_its_own_registry():
    first, second = Metrics(), Metrics()
    first.leading(True)
    assert value(first, "leader_election_master_status", name=LEASE) == 1
    assert value(second, "leader_election_master_status", name=LEASE) == 0


@pytest.mark.parametrize(("requeue", "failed", "result"), [
    (None, False, "success"),
    (0.0, False, "requeue"),
    (2.5, False, "requeue_after"),
    (None, True, "error"),
    (0.0, True, "error"),
    (7.0, True, "error"),
])
def test_reconcile_result(requeue, failed, result):
    assert reconcile_result(requeue, failed) == result


def test_an_error_counts_as_an_error_and_a_retry():
    metrics = Metrics()
    metrics.reconcile_began()
    metrics.reconciled("error", 0.3)
    metrics.reconcile_began()
    assert value(metrics, "controller_runtime_active_workers", controller=CONTROLLER) == 1
    metrics.reconciled("success", 0.1)
    assert value(metrics, "controller_runtime_active_workers", controller=CONTROLLER) == 0
    assert value(metrics, "controller_runtime_reconcile_total", controller=CONTROLLER, result="error") == 1
    assert value(metrics, "controller_runtime_reconcile_total", controller=CONTROLLER, result="success") == 1
    assert value(metrics, "controller_runtime_reconcile_errors_total", controller=CONTROLLER) == 1
    assert value(metrics, "workqueue_retries_total", name=CONTROLLER) == 1
    assert value(metrics, "controller_runtime_reconcile_time_seconds_count", controller=CONTROLLER) == 2
    assert value(metrics, "controller_runtime_reconcile_time_seconds_sum", controller=CONTROLLER) == pytest.approx(0.4)
    assert value(metrics, "controller_runtime_reconcile_time_seconds_bucket", controller=CONTROLLER, le="0.25") == 1


def test_ec2_requests_by_operation_then_outcome():
    metrics = Metrics()
    metrics.ec2_request("associate_iam_instance_profile", "ok", 0.2)
    metrics.ec2_request("associate_iam_instance_profile", "throttled", 1.5)
    metrics.ec2_request("describe_instances", "access-denied", 0.05)
    assert value(metrics, "ipo_ec2_requests_total", operation="associate_iam_instance_profile", outcome="ok") == 1
    assert value(metrics, "ipo_ec2_requests_total", operation="associate_iam_instance_profile", outcome="throttled") == 1
    assert value(metrics, "ipo_ec2_requests_total", operation="describe_instances", outcome="access-denied") == 1
    assert value(metrics, "ipo_ec2_request_duration_seconds_count", operation="associate_iam_instance_profile") == 2
    assert 'ipo_ec2_requests_total{operation="describe_instances",outcome="access-denied"} 1.0' in metrics.render().decode()


def condition(kind: str, status: str, reason: str) -> dict:
    return {"type": kind, "status": status, "reason": reason}


@pytest.mark.parametrize(("statuses", "counts"), [
    ([], {}),
    ([{}], {("Unknown", "false"): 1}),
    ([{"conditions": [condition("Ready", "True", "Associated")]}] * 2, {("Associated", "false"): 2}),
    ([{"conditions": [condition("Ready", "False", "AccessDenied"), condition("Stalled", "True", "AccessDenied")]},
      {"conditions": [condition("Ready", "False", "Throttled"), condition("Reconciling", "True", "Throttled")]}],
     {("AccessDenied", "true"): 1, ("Throttled", "false"): 1}),
])
def test_bindings_by_state(statuses, counts):
    assert bindings_by_state(statuses) == counts


@given(st.lists(st.fixed_dictionaries({}, optional={"conditions": st.lists(st.fixed_dictionaries({
    "type": st.sampled_from(["Ready", "Stalled", "Reconciling"]),
    "status": st.sampled_from(["True", "False"]),
    "reason": st.sampled_from(["Associated", "PolicyDenied", "Conflict"]),
}), max_size=3)})))
def test_every_binding_is_counted_once(statuses):
    counts = bindings_by_state(statuses)
    assert sum(counts.values()) == len(statuses)
    assert {stalled for _, stalled in counts} <= {"true", "false"}


def binding(name: str, status: dict) -> dict:
    return {"metadata": {"namespace": "team", "name": name, "uid": name, "generation": 1,
                         "finalizers": ["ec2.instanceprofiles.dev/finalizer"]},
            "spec": {"instanceId": f"i-{name}", "iamInstanceProfile": {"name": "web"}}, "status": status}


def test_scrape_reads_the_attached_controller():
    metrics = Metrics()
    writer = SimpleNamespace(status_patches=3, events_recorded=2)
    gateway = Ec2Gateway(session=boto3.Session(region_name="us-east-1"), metrics=metrics)  # makes no call here
    registry = Registry("us-east-1")
    for body in (binding("a", {"conditions": [condition("Ready", "True", "Associated")]}),
                 binding("b", {"conditions": [condition("Ready", "False", "PolicyDenied"), condition("Stalled", "True", "PolicyDenied")]}),
                 binding("c", {})):
        registry.upsert(Binding.from_body(body))
    controller = Controller(Settings(region="us-east-1", workers=4), gateway, writer, Tenancy(enforcing=False),
                            metrics=metrics, registry=registry)
    metrics.attach(controller)
    for key in registry.keys():
        controller.queue.add(key)
    assert value(metrics, "ipo_bindings", reason="Associated", stalled="false") == 1
    assert value(metrics, "ipo_bindings", reason="PolicyDenied", stalled="true") == 1
    assert value(metrics, "ipo_bindings", reason="Unknown", stalled="false") == 1
    assert value(metrics, "workqueue_depth", name=CONTROLLER) == 3
    assert value(metrics, "workqueue_adds_total", name=CONTROLLER) == 3
    assert value(metrics, "controller_runtime_max_concurrent_reconciles", controller=CONTROLLER) == 4
    assert (value(metrics, "ipo_status_patches_total"), value(metrics, "ipo_events_total")) == (3, 2)
    gateway.close()


async def test_queue_hooks_count_adds_and_time_waiting_and_working():
    metrics, clock = Metrics(), FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock, metrics.queue)
    queue.add("a")
    queue.add("a")  # already waiting: not another add
    clock.advance(3)
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    queue.add("a")  # while processing: added again once done
    clock.advance(2)
    queue.done("a")
    assert value(metrics, "workqueue_adds_total", name=CONTROLLER) == 2
    assert value(metrics, "workqueue_queue_duration_seconds_sum", name=CONTROLLER) == 3
    assert value(metrics, "workqueue_work_duration_seconds_sum", name=CONTROLLER) == 2
    assert value(metrics, "workqueue_work_duration_seconds_count", name=CONTROLLER) == 1


async def test_work_in_process_is_unfinished_work_and_the_longest_runs_longest():
    """controller-runtime's meaning: seconds of work in process not yet observed by work_duration."""
    metrics, clock = Metrics(), FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock, metrics.queue)
    metrics.controller = SimpleNamespace(queue=queue, registry=SimpleNamespace(keys=lambda: (), get=None),
                                         writer=SimpleNamespace(status_patches=0, events_recorded=0), resyncs=0)
    queue.add("a")
    queue.add("b")
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    clock.advance(3)
    assert await asyncio.wait_for(queue.get(), 1) == "b"
    clock.advance(2)
    assert value(metrics, "workqueue_unfinished_work_seconds", name=CONTROLLER) == 7
    assert value(metrics, "workqueue_longest_running_processor_seconds", name=CONTROLLER) == 5
    queue.done("a")
    queue.done("b")
    assert value(metrics, "workqueue_unfinished_work_seconds", name=CONTROLLER) == 0
    assert value(metrics, "workqueue_longest_running_processor_seconds", name=CONTROLLER) == 0


def test_the_process_and_platform_are_served():
    metrics = Metrics()
    assert value(metrics, "process_resident_memory_bytes") > 0
    assert value(metrics, "process_cpu_seconds_total") > 0


async def test_served_from_the_event_loop_in_the_text_format():
    metrics, port = Metrics(), free_port()
    metrics.leading(True)
    runner = await serve(metrics, f"127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    finally:
        await runner.cleanup()
    assert f'leader_election_master_status{{name="{LEASE}"}} 1.0' in text.splitlines()


async def test_readiness_follows_what_the_replica_can_answer():
    port, answering = free_port(), {"admission": False}
    runner = await serve(Metrics(), f"127.0.0.1:{port}", lambda: answering["admission"])
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 503
            answering["admission"] = True
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


async def test_gateway_counts_each_request_by_outcome():
    metrics = Metrics()
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    gateway = Ec2Gateway(max_attempts=1, session=session, metrics=metrics)
    with Stubber(gateway._client(OWN_ACCOUNT, "us-east-1")) as stub:
        stub.add_response("describe_instances", {"Reservations": []})
        stub.add_client_error("describe_instances", "RequestLimitExceeded", http_status_code=503)
        stub.add_client_error("describe_instances", "UnauthorizedOperation", http_status_code=403)
        await gateway.describe_instances("us-east-1", ["i-1"])
        for _ in range(2):
            with pytest.raises(AwsFault):
                await gateway.describe_instances("us-east-1", ["i-1"])
    gateway.close()
    for outcome in ("ok", "throttled", "access-denied"):
        assert value(metrics, "ipo_ec2_requests_total", operation="describe_instances", outcome=outcome) == 1
    assert value(metrics, "ipo_ec2_request_duration_seconds_count", operation="describe_instances") == 3
