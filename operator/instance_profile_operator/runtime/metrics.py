"""Every metric the operator exposes, defined in one place, served at ``/metrics``.

Names follow controller-runtime's where the same thing exists (``controller_runtime_*``,
``workqueue_*``, ``leader_election_master_status``), so dashboards and alerts written for Go
operators apply unchanged. Each ``Metrics`` has a registry of its own rather than
prometheus_client's global one, so tests can build as many as they like. Values that are state
rather than events (queue depth, bindings by Ready reason, the counters the Kubernetes writer
keeps) are read from the controller at scrape time, inside the event loop that owns them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import prometheus_client
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.api import READY, STALLED, COMPONENT
from ..core.model import Place
from .workqueue import QueueHooks

if TYPE_CHECKING:
    from ..bindings.controller import Controller
    from ..bindings.registry import Registry

prometheus_client.disable_created_metrics()  # no *_created series: controller-runtime has none either

CONTROLLER = "instanceprofilebinding"  # the controller and work-queue label, as controller-runtime names them
LEASE = COMPONENT  # the Lease's name, the leader_election_master_status label
RESULTS = ("success", "error", "requeue", "requeue_after")
NO_STATUS = "Unknown"  # the reason label of bindings that have no Ready condition yet
OWN_ACCOUNT = "own"  # the account label of the operator's own credentials (no role assumed)

# controller-runtime's buckets: reconcile time, and work-queue durations (10 ns .. 1000 s).
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
                     1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60)
QUEUE_BUCKETS = tuple(1e-8 * 10 ** n for n in range(12))
EC2_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def reconcile_result(requeue: float | None, failed: bool) -> str:
    """controller-runtime's result label of one reconcile; ``failed`` is a failure to talk to AWS
    or Kubernetes, not a user's mistake that the binding's status reports (that is a requeue)."""
    if failed:
        return "error"
    if requeue is None:
        return "success"
    return "requeue_after" if requeue > 0 else "requeue"


def bindings_by_state(statuses: Iterable[dict]) -> dict[tuple[str, str], int]:
    """Count bindings by (Ready reason, "true"|"false" for Stalled)."""
    counts: dict[tuple[str, str], int] = {}
    for status in statuses:
        conditions = {c.get("type"): c for c in status.get("conditions") or ()}
        reason = conditions.get(READY, {}).get("reason") or NO_STATUS
        stalled = "true" if conditions.get(STALLED, {}).get("status") == "True" else "false"
        counts[reason, stalled] = counts.get((reason, stalled), 0) + 1
    return counts


class _QueueMetrics(QueueHooks):
    def __init__(self, adds: prometheus_client.Counter, queued: prometheus_client.Histogram,
                 worked: prometheus_client.Histogram):
        self._adds, self._queued, self._worked = adds, queued, worked

    def added(self) -> None:
        self._adds.inc()

    def started(self, waited: float) -> None:
        self._queued.observe(waited)

    def finished(self, worked: float) -> None:
        self._worked.observe(worked)


class _ControllerState(Collector):
    """Scrape-time values read from the running controller (zeros before it starts)."""

    def __init__(self, metrics: "Metrics"):
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        return self._families(self._metrics.controller, self._metrics.known)

    @staticmethod
    def _families(controller: Controller | None, known: Registry | None = None) -> Iterator[Metric]:
        depth = GaugeMetricFamily("workqueue_depth", "Current depth of the work queue.", labels=["name"])
        unfinished = GaugeMetricFamily(
            "workqueue_unfinished_work_seconds", "How many seconds of work has been done that is in progress and "
            "hasn't been observed by work_duration. Large values indicate stuck threads.", labels=["name"])
        longest = GaugeMetricFamily("workqueue_longest_running_processor_seconds", "How many seconds has the longest "
                                    "running processor for workqueue been running.", labels=["name"])
        bindings = GaugeMetricFamily("ipo_bindings", "InstanceProfileBindings by the reason of their Ready condition.",
                                     labels=["reason", "stalled"])
        patches = CounterMetricFamily("ipo_status_patches", "Status subresource PATCH requests.")
        events = CounterMetricFamily("ipo_events", "Events created or counted again.")
        resyncs = CounterMetricFamily("ipo_resyncs", "Completed periodic resyncs.")
        known = controller.registry if controller is not None else known
        if known is not None:  # the controller's bindings, or those a standby knows
            statuses = (b.status for b in map(known.get, known.keys()) if b is not None)
            for (reason, stalled), count in sorted(bindings_by_state(statuses).items()):
                bindings.add_metric([reason, stalled], count)
        if controller is None:
            for family in (depth, unfinished, longest):
                family.add_metric([CONTROLLER], 0)
            for family in (patches, events, resyncs):
                family.add_metric([], 0)
        else:
            depth.add_metric([CONTROLLER], len(controller.queue))
            running = controller.queue.running()
            unfinished.add_metric([CONTROLLER], sum(running))
            longest.add_metric([CONTROLLER], max(running, default=0.0))
            patches.add_metric([], controller.writer.status_patches)
            events.add_metric([], controller.writer.events_recorded)
            resyncs.add_metric([], controller.resyncs)
        yield from (depth, unfinished, longest, bindings, patches, events, resyncs)


class Metrics:
    """The operator's metrics in a registry of their own, and the hooks that feed them."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.controller: Controller | None = None
        self.known: Registry | None = None  # the bindings a standby knows (its controller's, once it leads)
        r = self.registry
        c, h, g = prometheus_client.Counter, prometheus_client.Histogram, prometheus_client.Gauge
        self.reconciles = c("controller_runtime_reconcile_total", "Total number of reconciliations per controller.",
                            ["controller", "result"], registry=r)
        self.reconcile_errors = c("controller_runtime_reconcile_errors_total",
                                  "Total number of reconciliation errors per controller.", ["controller"], registry=r)
        self.reconcile_time = h("controller_runtime_reconcile_time_seconds", "Length of time per reconciliation per controller.",
                                ["controller"], buckets=RECONCILE_BUCKETS, registry=r)
        self.active_workers = g("controller_runtime_active_workers", "Number of currently used workers per controller.",
                                ["controller"], registry=r)
        self.max_workers = g("controller_runtime_max_concurrent_reconciles", "Maximum number of concurrent reconciles per controller.",
                             ["controller"], registry=r)
        adds = c("workqueue_adds_total", "Total number of adds handled by the work queue.", ["name"], registry=r)
        self.retries = c("workqueue_retries_total", "Total number of retries handled by the work queue.", ["name"], registry=r)
        queued = h("workqueue_queue_duration_seconds", "How long in seconds an item stays in the work queue before being requested.",
                   ["name"], buckets=QUEUE_BUCKETS, registry=r)
        worked = h("workqueue_work_duration_seconds", "How long in seconds processing an item from the work queue takes.",
                   ["name"], buckets=QUEUE_BUCKETS, registry=r)
        self.leader = g("leader_election_master_status",
                        "1 when this process reconciles (the Lease holder, or the only replica without leader election), 0 on standby.", ["name"], registry=r)
        self.ec2_requests = c("ipo_ec2_requests_total",
                              "EC2 API requests (every attempt) by operation and outcome: ok, or the fault kind "
                              "(throttled, access-denied, ...).", ["operation", "outcome"], registry=r)
        self.ec2_duration = h("ipo_ec2_request_duration_seconds", "Latency of one EC2 API request (one attempt).",
                              ["operation"], buckets=EC2_BUCKETS, registry=r)
        self.resync_failures = c("ipo_resync_failures_total",
                                 "Describes of one account (role ARN, or own) and region that failed in a resync or "
                                 "the start-up listing; its bindings show the fault.", ["account", "region"], registry=r)
        r.register(_ControllerState(self))
        # the process's CPU, memory and file descriptors, and the Python build: what Go operators' dashboards show
        prometheus_client.ProcessCollector(registry=r)
        prometheus_client.PlatformCollector(registry=r)

        for result in RESULTS:  # controller-runtime starts these at zero so that rate() sees the first one
            self.reconciles.labels(CONTROLLER, result)
        for family in (self.reconcile_errors, self.reconcile_time, self.active_workers, self.max_workers, adds, self.retries):
            family.labels(CONTROLLER)
        self.leader.labels(LEASE).set(0)
        self.queue = _QueueMetrics(adds.labels(CONTROLLER), queued.labels(CONTROLLER), worked.labels(CONTROLLER))

    def attach(self, controller: Controller) -> None:
        """Read queue depth, bindings and write counters from this controller from now on."""
        self.controller = controller
        self.max_workers.labels(CONTROLLER).set(controller.settings.workers)

    def reconcile_began(self) -> None:
        self.active_workers.labels(CONTROLLER).inc()

    def reconciled(self, result: str, seconds: float) -> None:
        """One reconcile ended; an error means the key goes back with backoff, as a retry."""
        self.active_workers.labels(CONTROLLER).dec()
        self.reconciles.labels(CONTROLLER, result).inc()
        self.reconcile_time.labels(CONTROLLER).observe(seconds)
        if result == "error":
            self.reconcile_errors.labels(CONTROLLER).inc()
            self.retries.labels(CONTROLLER).inc()

    def ec2_request(self, operation: str, outcome: str, seconds: float) -> None:
        self.ec2_requests.labels(operation, outcome).inc()
        self.ec2_duration.labels(operation).observe(seconds)

    def resync_failed(self, place: Place) -> None:
        account, region = place
        self.resync_failures.labels(account or OWN_ACCOUNT, region).inc()

    def leading(self, leader: bool) -> None:
        self.leader.labels(LEASE).set(1 if leader else 0)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


async def serve(metrics: Metrics, address: str, ready: Callable[[], bool] = lambda: True) -> web.AppRunner:
    """Serve ``/metrics`` and ``/readyz`` (200 when ``ready()``, else 503) on ``host:port`` inside the
    running event loop; return the runner to clean up. A standby is ready too: it serves both."""
    host, _, port = address.rpartition(":")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ok") if ready() else web.Response(status=503, text="admission not ready")

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    return runner
