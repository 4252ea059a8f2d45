"""Run the operator as a real subprocess, the way a Deployment would, and read its probes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from instance_profile_operator.devenv.cluster import _die_with_parent, free_port

from .waiting import wait_for

# Short intervals so that tests of drift, backoff and settling finish in seconds.
FAST = {
    "IPO_RESYNC_SECONDS": "2",
    "IPO_RETRY_BASE_SECONDS": "0.2",
    "IPO_RETRY_MAX_SECONDS": "2",
    "AWS_MAX_ATTEMPTS": "2",
}


class OperatorProcess:
    def __init__(self, kubeconfig: str, aws_env: dict[str, str], log_path: Path,
                 namespaces: list[str] | None = None, **overrides: str | None):
        """``overrides`` win over the environment; a None one removes that variable."""
        self.kubeconfig = kubeconfig
        self.scope = [arg for ns in namespaces for arg in ("--namespace", ns)] if namespaces else ["--all-namespaces"]
        merged = {**os.environ, **aws_env, **FAST, **overrides, "KUBECONFIG": kubeconfig}
        self.env = {name: value for name, value in merged.items() if value is not None}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 30.0) -> "OperatorProcess":
        self.port, self.metrics_port = free_port(), free_port()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "instance_profile_operator.cli", "run", *self.scope,
                 "--liveness-endpoint", f"http://127.0.0.1:{self.port}/healthz",
                 "--metrics-address", f"127.0.0.1:{self.metrics_port}"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        wait_for(self._alive, timeout, "the operator's liveness endpoint")
        return self

    def _alive(self) -> bool:
        assert self.process is not None and self.process.poll() is None, f"operator exited; see {self.log_path}"
        try:
            return bool(self.probes()) and bool(self.metrics())
        except OSError:
            return False

    def probes(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
            return json.loads(response.read())

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """The /metrics samples as (name, labels, value), parsed by prometheus_client's own parser."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
            text = response.read().decode()
        return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]

    def metrics(self) -> dict[str, float]:
        """The samples keyed by name and labels in alphabetical order, e.g. 'ipo_status_patches_total'
        or 'ipo_ec2_requests_total{operation="describe_instances",outcome="ok"}'."""
        keyed = {}
        for name, labels, value in self.samples():
            rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            keyed[f"{name}{{{rendered}}}" if rendered else name] = value
        return keyed

    def total(self, name: str, /, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for n, have, v in self.samples() if n == name and labels.items() <= have.items())

    def stop(self, kill: bool = False, timeout: float = 15.0) -> int:
        """SIGTERM (graceful) or SIGKILL (a crash); return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"operator did not stop within {timeout} s after SIGTERM")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ec2_calls(self) -> dict[str, int]:
        """EC2 requests per operation, whatever their outcome."""
        calls: Counter[str] = Counter()
        for name, labels, value in self.samples():
            if name == "ipo_ec2_requests_total":
                calls[labels["operation"]] += int(value)
        return dict(calls)

    def status_patches(self) -> int:
        return int(self.metrics()["ipo_status_patches_total"])
