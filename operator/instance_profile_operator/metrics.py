"""A Prometheus ``/metrics`` endpoint: EC2 calls, status writes, Events, queue depth."""

from __future__ import annotations

from aiohttp import web

from .controller import Controller


def render(controller: Controller) -> str:
    lines = [
        "# HELP ipo_ec2_calls_total EC2 API requests by operation, retries included.",
        "# TYPE ipo_ec2_calls_total counter",
        *(f'ipo_ec2_calls_total{{operation="{op}"}} {n}' for op, n in sorted(controller.gateway.calls.items())),
        "# HELP ipo_status_patches_total Status subresource PATCH requests.",
        "# TYPE ipo_status_patches_total counter",
        f"ipo_status_patches_total {controller.writer.status_patches}",
        "# HELP ipo_events_total Events created or counted again.",
        "# TYPE ipo_events_total counter",
        f"ipo_events_total {controller.writer.events_recorded}",
        "# HELP ipo_resyncs_total Completed periodic resyncs.",
        "# TYPE ipo_resyncs_total counter",
        f"ipo_resyncs_total {controller.resyncs}",
        "# HELP ipo_bindings InstanceProfileBindings the operator knows of.",
        "# TYPE ipo_bindings gauge",
        f"ipo_bindings {len(controller.registry)}",
        "# HELP ipo_workqueue_depth Bindings waiting in the work queue.",
        "# TYPE ipo_workqueue_depth gauge",
        f"ipo_workqueue_depth {len(controller.queue)}",
    ]
    return "\n".join(lines) + "\n"


async def serve(controller: Controller, address: str) -> web.AppRunner:
    """Serve ``/metrics`` on ``host:port``; return the runner to clean up."""
    host, _, port = address.rpartition(":")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=render(controller), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    return runner
