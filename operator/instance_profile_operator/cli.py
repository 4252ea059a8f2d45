"""``instance-profile-operator run``: the operator's entry point."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import kopf

from . import __version__
from .handlers import QuietWatchLog, build_registry
from .settings import add_arguments, from_arguments


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
    asyncio.run(kopf.operator(
        registry=build_registry(settings),
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
