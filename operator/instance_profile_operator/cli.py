"""``instance-profile-operator run``: the operator's entry point."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import kopf
import kubernetes

from . import __version__, leader, metrics
from .handlers import QuietWatchLog, build_registry
from .kube import load_api_client
from .settings import Settings, add_arguments, from_arguments


async def run_operator(settings: Settings) -> None:
    """Serve metrics, then run kopf: at once, or once elected when leader election is on."""
    kubernetes.client.CoreV1Api  # noqa: B018 -- loads the client's largest module (1-2 s) now, not at a takeover
    collected = metrics.Metrics()
    server = await metrics.serve(collected, settings.metrics_address) if settings.metrics_address else None
    registry = build_registry(settings, collected)

    async def operate() -> None:
        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=settings.liveness_endpoint,
        )

    try:
        if settings.leader_elect:
            timing = leader.Timing(settings.lease_duration_seconds, settings.renew_deadline_seconds, settings.retry_period_seconds)
            elector = leader.Elector(kubernetes.client.CoordinationV1Api(load_api_client()), settings.leader_election_namespace,
                                     leader.identity(), timing, collected)
            await leader.run_elected(elector, operate, settings.liveness_endpoint)
        else:
            collected.leading(True)  # the only replica: it always reconciles
            await operate()
    finally:
        if server is not None:
            await server.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="instance-profile-operator", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator (KUBECONFIG or in-cluster config; boto3's credential chain)")
    add_arguments(run)
    run.add_argument("--verbose", "-v", action="store_true", default=os.environ.get("IPO_VERBOSE", "").lower() in ("1", "true", "yes"),
                     help="debug logging [IPO_VERBOSE]")
    args = parser.parse_args(argv)
    settings = from_arguments(args)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL)
    if not args.verbose:
        logging.getLogger("kopf.objects").addFilter(QuietWatchLog())
    asyncio.run(run_operator(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
