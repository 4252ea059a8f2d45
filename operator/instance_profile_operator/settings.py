"""Operator configuration: every command-line flag has an environment variable.

A bad value, given either way, is a one-line error that names the flag or variable and what it
takes (``SettingsError``; the command exits 2).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .aws.ratelimit import Limit, parse_limit


ENFORCE, DISABLED = "Enforce", "Disabled"
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class SettingsError(Exception):
    """A flag or environment value the operator cannot use."""


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
    policy_enforcement: str = "Enforce"  # or Disabled: every binding is allowed, in the operator's account
    webhook_address: str | None = None
    webhook_cert_file: str | None = None
    webhook_key_file: str | None = None
    leader_elect: bool = False
    leader_election_namespace: str = "default"
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0

    @property
    def enforcing(self) -> bool:
        return self.policy_enforcement == ENFORCE

    @property
    def serves_admission(self) -> bool:
        """The webhook judges by policies: it is served only when they are enforced."""
        return bool(self.webhook_address) and self.enforcing


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number of at least 1, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"takes a number of seconds greater than 0, not {text!r}")
    return value


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"takes true or false, not {text!r}")


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"takes a fraction greater than 0 and at most 1, not {text!r}")
    return value


def rate_limit(text: str) -> tuple[str, Limit]:
    try:
        return parse_limit(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"takes ACTION=BURST:RATE: {error}") from None


def rate_limits(text: str) -> list[tuple[str, Limit]]:
    return [rate_limit(item) for item in text.split(",") if item.strip()]


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"takes one of {', '.join(choices)}, not {text!r}")
        return text
    parse.__name__ = "choice"
    return parse


def from_env(name: str, fallback: Any, parse: Callable[[str], Any] = str) -> Any:
    """The parsed value of environment variable ``name``, else ``fallback``."""
    text = os.environ.get(name)
    if text is None or (text == "" and parse is not boolean):
        return fallback
    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        raise SettingsError(f"environment variable {name} {error}") from None


def pod_namespace(path: Path = POD_NAMESPACE_FILE) -> str:
    """The namespace the pod runs in, from its ServiceAccount mount; "default" outside a pod."""
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", dest="namespaces", metavar="NS",
                       default=[n for n in from_env("IPO_NAMESPACES", "").split(",") if n],
                       help="watch this namespace (repeatable) [IPO_NAMESPACES, comma-separated]")
    scope.add_argument("--all-namespaces", "-A", action="store_true", default=from_env("IPO_ALL_NAMESPACES", False, boolean),
                       help="watch every namespace, the default when no --namespace is given [IPO_ALL_NAMESPACES]")
    parser.add_argument("--region", default=from_env("IPO_REGION", None) or from_env("AWS_REGION", None) or from_env("AWS_DEFAULT_REGION", None),
                        help="region of bindings that name none [IPO_REGION, else AWS_REGION, else AWS_DEFAULT_REGION]")
    parser.add_argument("--resync-seconds", type=positive_seconds, default=from_env("IPO_RESYNC_SECONDS", 60.0, positive_seconds),
                        help="how often every association is described again to detect drift [IPO_RESYNC_SECONDS]")
    parser.add_argument("--log-format", type=one_of("text", "json"), default=from_env("IPO_LOG_FORMAT", "text", one_of("text", "json")),
                        help="text or json [IPO_LOG_FORMAT]")
    parser.add_argument("--workers", type=positive_int, default=from_env("IPO_WORKERS", 16, positive_int),
                        help="bindings reconciled concurrently [IPO_WORKERS]")
    parser.add_argument("--aws-concurrency", type=positive_int, default=from_env("IPO_AWS_CONCURRENCY", 8, positive_int),
                        help="EC2 calls in flight at most [IPO_AWS_CONCURRENCY]")
    parser.add_argument("--aws-max-attempts", type=positive_int, default=from_env("AWS_MAX_ATTEMPTS", 5, positive_int),
                        help="attempts per EC2 call, botocore's adaptive retries included [AWS_MAX_ATTEMPTS]")
    parser.add_argument("--retry-base-seconds", type=positive_seconds, default=from_env("IPO_RETRY_BASE_SECONDS", 1.0, positive_seconds),
                        help="first backoff after a failure, doubled each time [IPO_RETRY_BASE_SECONDS]")
    parser.add_argument("--retry-max-seconds", type=positive_seconds, default=from_env("IPO_RETRY_MAX_SECONDS", 300.0, positive_seconds),
                        help="backoff cap [IPO_RETRY_MAX_SECONDS]")
    parser.add_argument("--liveness-endpoint", default=from_env("IPO_LIVENESS_ENDPOINT", None), metavar="URL",
                        help="serve kopf's health probes here, e.g. http://0.0.0.0:8080/healthz [IPO_LIVENESS_ENDPOINT]")
    parser.add_argument("--metrics-address", default=from_env("IPO_METRICS_ADDRESS", None), metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 0.0.0.0:8081 [IPO_METRICS_ADDRESS]")
    parser.add_argument("--ec2-budget-share", type=fraction, default=from_env("IPO_EC2_BUDGET_SHARE", 1.0, fraction),
                        help="share of each EC2 request bucket of an account the operator may use [IPO_EC2_BUDGET_SHARE]")
    parser.add_argument("--ec2-rate-limit", action="append", dest="ec2_rate_limits", type=rate_limit, metavar="ACTION=BURST:RATE",
                        default=from_env("IPO_EC2_RATE_LIMITS", [], rate_limits),
                        help="EC2 bucket of one action, e.g. AssociateIamInstanceProfile=100:5 (repeatable; default: "
                             "EC2's documented buckets) [IPO_EC2_RATE_LIMITS, comma-separated]")
    enforcement = one_of(ENFORCE, DISABLED)
    parser.add_argument("--policy-enforcement", type=enforcement, default=from_env("IPO_POLICY_ENFORCEMENT", ENFORCE, enforcement),
                        help="Enforce: a binding needs an InstanceProfilePolicy that allows it (docs/tenancy.md); "
                             "Disabled: every binding is allowed [IPO_POLICY_ENFORCEMENT]")
    parser.add_argument("--webhook-address", default=from_env("IPO_WEBHOOK_ADDRESS", None), metavar="HOST:PORT",
                        help="serve the validating admission webhook (HTTPS) here; off when unset [IPO_WEBHOOK_ADDRESS]")
    parser.add_argument("--webhook-cert-file", default=from_env("IPO_WEBHOOK_CERT_FILE", None), metavar="PATH",
                        help="the webhook's serving certificate (PEM) [IPO_WEBHOOK_CERT_FILE]")
    parser.add_argument("--webhook-key-file", default=from_env("IPO_WEBHOOK_KEY_FILE", None), metavar="PATH",
                        help="the webhook's private key (PEM) [IPO_WEBHOOK_KEY_FILE]")
    election = parser.add_argument_group("leader election (a coordination.k8s.io/v1 Lease, as controller-runtime's)")
    election.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=from_env("IPO_LEADER_ELECT", False, boolean),
                          help="stand by until this replica holds the Lease; only the holder reconciles [IPO_LEADER_ELECT]")
    election.add_argument("--leader-election-namespace", default=from_env("IPO_LEADER_ELECTION_NAMESPACE", None), metavar="NS",
                          help="namespace of the Lease, by default the pod's own [IPO_LEADER_ELECTION_NAMESPACE]")
    election.add_argument("--leader-elect-lease-duration", type=positive_seconds, dest="lease_duration_seconds",
                          default=from_env("IPO_LEADER_ELECT_LEASE_DURATION", 15.0, positive_seconds),
                          help="seconds a standby waits after the last renewal before taking the Lease [IPO_LEADER_ELECT_LEASE_DURATION]")
    election.add_argument("--leader-elect-renew-deadline", type=positive_seconds, dest="renew_deadline_seconds",
                          default=from_env("IPO_LEADER_ELECT_RENEW_DEADLINE", 10.0, positive_seconds),
                          help="seconds the leader keeps trying to renew before it gives up and exits [IPO_LEADER_ELECT_RENEW_DEADLINE]")
    election.add_argument("--leader-elect-retry-period", type=positive_seconds, dest="retry_period_seconds",
                          default=from_env("IPO_LEADER_ELECT_RETRY_PERIOD", 2.0, positive_seconds),
                          help="seconds between attempts to take or renew the Lease [IPO_LEADER_ELECT_RETRY_PERIOD]")


def from_arguments(args: argparse.Namespace) -> Settings:
    if not args.region:
        raise SettingsError("no region configured: pass --region or set IPO_REGION, AWS_REGION or AWS_DEFAULT_REGION")
    if args.webhook_address and not (args.webhook_cert_file and args.webhook_key_file):
        raise SettingsError("--webhook-address needs --webhook-cert-file and --webhook-key-file "
                            "(IPO_WEBHOOK_CERT_FILE, IPO_WEBHOOK_KEY_FILE): the API server only calls webhooks over HTTPS")
    if not args.lease_duration_seconds > args.renew_deadline_seconds > args.retry_period_seconds:
        raise SettingsError("leader election needs --leader-elect-lease-duration > --leader-elect-renew-deadline"
                            " > --leader-elect-retry-period")
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
        ec2_budget_share=args.ec2_budget_share,
        ec2_rate_limits=tuple(args.ec2_rate_limits),
        policy_enforcement=args.policy_enforcement,
        webhook_address=args.webhook_address,
        webhook_cert_file=args.webhook_cert_file,
        webhook_key_file=args.webhook_key_file,
        leader_elect=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace or pod_namespace(),
        lease_duration_seconds=args.lease_duration_seconds,
        renew_deadline_seconds=args.renew_deadline_seconds,
        retry_period_seconds=args.retry_period_seconds,
    )
