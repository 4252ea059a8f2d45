"""Operator configuration: every command-line flag has an environment variable."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

from .ratelimit import Limit, parse_limit


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
    ec2_budget_share: float = 1.0  # of each EC2 bucket of the account
    ec2_rate_limits: tuple[tuple[str, Limit], ...] = ()  # overrides of EC2's defaults, per action


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def _invalid(message: str) -> NoReturn:
    """A one-line error, exit status 2 like argparse's usage errors."""
    print(f"instance-profile-operator: {message}", file=sys.stderr)
    raise SystemExit(2)


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
    parser.add_argument("--ec2-budget-share", default=env("IPO_EC2_BUDGET_SHARE", "1.0"),
                        help="share of each EC2 request bucket of the account the operator may use, 0 < x <= 1 [IPO_EC2_BUDGET_SHARE]")
    parser.add_argument("--ec2-rate-limit", action="append", dest="ec2_rate_limits",
                        default=[item for item in env("IPO_EC2_RATE_LIMITS", "").split(",") if item.strip()],
                        help="EC2 bucket of one action, ACTION=BURST:RATE, e.g. AssociateIamInstanceProfile=100:5 "
                             "(repeatable; default: EC2's documented limits) [IPO_EC2_RATE_LIMITS, comma-separated]")


def from_arguments(args: argparse.Namespace) -> Settings:
    if not args.region:
        raise SystemExit("no region configured: pass --region or set IPO_REGION or AWS_REGION")
    for name in ("resync_seconds", "retry_base_seconds", "retry_max_seconds"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive")
    for name in ("workers", "aws_concurrency", "aws_max_attempts"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    try:
        share = float(args.ec2_budget_share)
    except ValueError:
        share = 0.0
    if not 0 < share <= 1:
        _invalid(f"--ec2-budget-share / IPO_EC2_BUDGET_SHARE must be a fraction in (0, 1], not {args.ec2_budget_share!r}")
    try:
        limits = tuple(parse_limit(item) for item in args.ec2_rate_limits)
    except ValueError as error:
        _invalid(f"--ec2-rate-limit / IPO_EC2_RATE_LIMITS: {error}")
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
        ec2_budget_share=share,
        ec2_rate_limits=limits,
    )
