"""Run the operator as a real subprocess, the way a Deployment would, and read its probes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

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
    def __init__(self, kubeconfig: str, aws_env: dict[str, str], log_path: Path, **overrides: str):
        self.kubeconfig = kubeconfig
        self.env = {**os.environ, **aws_env, **FAST, **overrides, "KUBECONFIG": kubeconfig}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 30.0) -> "OperatorProcess":
        self.port = free_port()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "instance_profile_operator.cli", "run", "--all-namespaces",
                 "--liveness-endpoint", f"http://127.0.0.1:{self.port}/healthz"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        wait_for(self._alive, timeout, "the operator's liveness endpoint")
        return self

    def _alive(self) -> bool:
        assert self.process is not None and self.process.poll() is None, f"operator exited; see {self.log_path}"
        try:
            return bool(self.probes())
        except OSError:
            return False

    def probes(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
            return json.loads(response.read())

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
