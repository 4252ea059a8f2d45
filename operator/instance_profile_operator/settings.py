"""Operator configuration: every command-line flag has an environment variable.

A bad value, given either way, is a one-line error that names the flag or variable and what it
takes (``SettingsError``; the command exits 2).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Callable


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


def from_arguments(args: argparse.Namespace) -> Settings:
    if not args.region:
        raise SettingsError("no region configured: pass --region or set IPO_REGION, AWS_REGION or AWS_DEFAULT_REGION")
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
    )
