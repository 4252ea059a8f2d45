"""Operator configuration: every command-line flag has an environment variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class Settings:
    region: str
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    resync_seconds: float = 60.0
    log_format: str = "text"
    workers: int = 16
    aws_concurrency: int = 8
    aws_max_attempts: int = 5
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    settle_base_seconds: float = 1.0
    settle_max_seconds: float = 30.0
    liveness_endpoint: str | None = None
    metrics_address: str | None = None
    leader_elect: bool = False
    leader_election_namespace: str = "default"
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def pod_namespace(path: Path = POD_NAMESPACE_FILE) -> str:
    """The namespace the pod runs in, from its ServiceAccount mount; "default" outside a pod."""
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", dest="namespaces",
                       default=[n for n in env("IPO_NAMESPACES", "").split(",") if n],
                       help="watch this namespace (repeatable) [IPO_NAMESPACES, comma-separated]")
    scope.add_argument("--all-namespaces", "-A", action="store_true", default=_env_bool("IPO_ALL_NAMESPACES"),
                       help="watch every namespace, the default when no --namespace is given [IPO_ALL_NAMESPACES]")
    parser.add_argument("--region", default=env("IPO_REGION") or env("AWS_REGION") or env("AWS_DEFAULT_REGION"),
                        help="region of bindings that name none [IPO_REGION, else AWS_REGION / AWS_DEFAULT_REGION]")
    parser.add_argument("--resync-seconds", type=float, default=float(env("IPO_RESYNC_SECONDS", "60")),
                        help="how often every association is described again to detect drift [IPO_RESYNC_SECONDS]")
    parser.add_argument("--log-format", choices=("text", "json"), default=env("IPO_LOG_FORMAT", "text"),
                        help="[IPO_LOG_FORMAT]")
    parser.add_argument("--workers", type=int, default=int(env("IPO_WORKERS", "16")),
                        help="bindings reconciled concurrently [IPO_WORKERS]")
    parser.add_argument("--aws-concurrency", type=int, default=int(env("IPO_AWS_CONCURRENCY", "8")),
                        help="EC2 calls in flight at most [IPO_AWS_CONCURRENCY]")
    parser.add_argument("--aws-max-attempts", type=int, default=int(env("AWS_MAX_ATTEMPTS", "5")),
                        help="attempts per EC2 call, botocore's adaptive retries included [AWS_MAX_ATTEMPTS]")
    parser.add_argument("--retry-base-seconds", type=float, default=float(env("IPO_RETRY_BASE_SECONDS", "1")),
                        help="first backoff after a failure, doubled each time [IPO_RETRY_BASE_SECONDS]")
    parser.add_argument("--retry-max-seconds", type=float, default=float(env("IPO_RETRY_MAX_SECONDS", "300")),
                        help="backoff cap [IPO_RETRY_MAX_SECONDS]")
    parser.add_argument("--liveness-endpoint", default=env("IPO_LIVENESS_ENDPOINT"),
                        help="serve kopf's health probes here, e.g. http://0.0.0.0:8080/healthz [IPO_LIVENESS_ENDPOINT]")
    parser.add_argument("--metrics-address", default=env("IPO_METRICS_ADDRESS"),
                        help="serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 0.0.0.0:8081 [IPO_METRICS_ADDRESS]")
    election = parser.add_argument_group("leader election (a coordination.k8s.io/v1 Lease, as controller-runtime's)")
    election.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=_env_bool("IPO_LEADER_ELECT"),
                          help="stand by until this replica holds the Lease; only the holder reconciles [IPO_LEADER_ELECT]")
    election.add_argument("--leader-election-namespace", default=env("IPO_LEADER_ELECTION_NAMESPACE") or None,
                          help="namespace of the Lease, by default the pod's own [IPO_LEADER_ELECTION_NAMESPACE]")
    election.add_argument("--leader-elect-lease-duration", type=float, dest="lease_duration_seconds",
                          default=float(env("IPO_LEADER_ELECT_LEASE_DURATION", "15")),
                          help="seconds a standby waits after the last renewal before taking the Lease [IPO_LEADER_ELECT_LEASE_DURATION]")
    election.add_argument("--leader-elect-renew-deadline", type=float, dest="renew_deadline_seconds",
                          default=float(env("IPO_LEADER_ELECT_RENEW_DEADLINE", "10")),
                          help="seconds the leader keeps trying to renew before it gives up and exits [IPO_LEADER_ELECT_RENEW_DEADLINE]")
    election.add_argument("--leader-elect-retry-period", type=float, dest="retry_period_seconds",
                          default=float(env("IPO_LEADER_ELECT_RETRY_PERIOD", "2")),
                          help="seconds between attempts to take or renew the Lease [IPO_LEADER_ELECT_RETRY_PERIOD]")


def from_arguments(args: argparse.Namespace) -> Settings:
    if not args.region:
        raise SystemExit("no region configured: pass --region or set IPO_REGION or AWS_REGION")
    for name in ("resync_seconds", "retry_base_seconds", "retry_max_seconds"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive")
    for name in ("workers", "aws_concurrency", "aws_max_attempts"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if not args.lease_duration_seconds > args.renew_deadline_seconds > args.retry_period_seconds > 0:
        raise SystemExit("leader election needs --leader-elect-lease-duration > --leader-elect-renew-deadline"
                         " > --leader-elect-retry-period > 0")
    return Settings(
        region=args.region,
        namespaces=() if args.all_namespaces else tuple(args.namespaces),
        resync_seconds=args.resync_seconds,
        log_format=args.log_format,
        workers=args.workers,
        aws_concurrency=args.aws_concurrency,
        aws_max_attempts=args.aws_max_attempts,
        retry_base_seconds=args.retry_base_seconds,
        retry_max_seconds=args.retry_max_seconds,
        liveness_endpoint=args.liveness_endpoint,
        metrics_address=args.metrics_address,
        leader_elect=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace or pod_namespace(),
        lease_duration_seconds=args.lease_duration_seconds,
        renew_deadline_seconds=args.renew_deadline_seconds,
        retry_period_seconds=args.retry_period_seconds,
    )
