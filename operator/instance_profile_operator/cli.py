"""instance-profile-operator: keeps the IAM instance profile of EC2 instances as
InstanceProfileBindings declare."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import kopf
import kubernetes

from . import __version__
from .aws.accounts import RefreshFailureLog
from .bindings.watch import BindingWatch
from .handlers import NoErrorThatIsNone, QuietWatchLog, SayOnce, build_registry
from .kube import admission, leader
from .kube.bookwatch import BookWatch
from .kube.writer import KubeConfigMissing, check_kube_config, load_api_client
from .runtime import memory, metrics
from .settings import Settings, SettingsError, add_arguments, boolean, from_arguments, from_env

PROG = "instance-profile-operator"
log = logging.getLogger(__name__)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors are one line (what is wrong and what it takes), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.replace("\n", " ").strip())
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = commands.add_parser("run", help="run the operator (in-cluster config or KUBECONFIG; boto3's credential chain)",
                              description="Run the operator. Every flag has an environment variable, shown in brackets.",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(run)
    run.add_argument("--verbose", "-v", action="store_true", default=from_env("IPO_VERBOSE", False, boolean),
                     help="debug logging [IPO_VERBOSE]")
    return parser.parse_args(argv)


async def run_operator(settings: Settings) -> None:
    """Serve metrics (and readiness) and admission, then run kopf: at once, or once elected when leader election is on."""
    kubernetes.client.CoreV1Api  # noqa: B018 -- loads the client's largest module (1-2 s) now, not at a takeover
    collected = metrics.Metrics()
    watch = BookWatch(load_api_client()) if settings.serves_admission else None
    admitting = asyncio.create_task(serve_admission(settings, watch), name="admission") if watch else None

    def ready() -> bool:
        """Whether this replica answers what Services send it: /metrics, and admission once its book is listed."""
        return admitting is None or (watch.book_if_known is not None and not admitting.done())  # type: ignore[union-attr]

    server = await metrics.serve(collected, settings.metrics_address, ready) if settings.metrics_address else None
    bindings = BindingWatch(load_api_client(), settings.namespaces, settings.region)
    registry = build_registry(settings, collected, bindings)

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
            await leader.run_elected(elector, operate, settings.liveness_endpoint, lambda: stand_by(bindings, collected))
        else:
            collected.leading(True)  # the only replica: it always reconciles
            await operate()
    finally:
        bindings.stop()  # a standby's, stopped before it led
        if admitting is not None:
            admitting.cancel()
        if server is not None:
            await server.cleanup()


def stand_by(watch: BindingWatch, collected: metrics.Metrics) -> None:
    """Another replica leads: know its bindings meanwhile (``ipo_bindings`` counts them)."""
    watch.stand_by()
    collected.known = watch.registry


async def serve_admission(settings: Settings, watch: BookWatch) -> None:
    """The admission webhook, on every replica (leader or standby), from the policy book ``watch`` keeps."""
    watch.start()
    try:
        await admission.serve_admission(
            admission.webhook_server(settings.webhook_address, settings.webhook_cert_file, settings.webhook_key_file),  # type: ignore[arg-type]
            lambda: watch.book_if_known, settings.region)
    except Exception:
        log.exception("the admission webhook stopped; this replica serves no admission")
        raise
    finally:
        watch.stop()


def main(argv: list[str] | None = None) -> int:
    memory.limit_arenas()
    try:
        args = parse(argv)
        settings = from_arguments(args)
    except SettingsError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    try:
        check_kube_config()
    except KubeConfigMissing as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL)
    if not args.verbose:
        logging.getLogger("kopf.objects").addFilter(QuietWatchLog())
    logging.getLogger("kopf._core.reactor.observation").addFilter(SayOnce())
    for handler in logging.getLogger().handlers:  # kopf's: whichever logger kopf passes down
        handler.addFilter(NoErrorThatIsNone())
    logging.getLogger("botocore.credentials").addFilter(RefreshFailureLog())
    asyncio.run(run_operator(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
