"""The main job on the embedded default: a local control plane and EC2 endpoint, the CRDs, the
demo's tenancy policy and admission webhook, the operator in the foreground, and the bindings of
``examples/``; with ``tenancy``, docs/tenancy.md's two teams too (``examples/tenancy/``, instances
in the demo's account and a second one). Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import prerequisites
from .cluster import DevEnv, Endpoints, _die_with_parent, wait_until
from .prerequisites import REPO, kubectl
from .seed import seed, seed_teams

ALL_READY = "All example bindings are Ready."
TEAMS_READY = "Both teams' bindings are Ready."
TENANCY = REPO / "examples" / "tenancy"
TEAM_NAMESPACES = ("team-a", "team-b")


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _all_ready(endpoints: Endpoints, *namespaces: str) -> bool:
    return all(subprocess.run([f"{endpoints.bin_dir}/kubectl", f"--kubeconfig={endpoints.kubeconfig}", "wait",
                               "--for=condition=Ready", "ipb", "--all", "-n", namespace, "--timeout=2s"],
                              capture_output=True, timeout=30).returncode == 0 for namespace in namespaces)


def another_terminal(endpoints: Endpoints) -> str:
    """The commands that point kubectl and boto3 (the AWS CLI too) at this environment."""
    return (
        "Try it from another terminal:\n"
        f"    export KUBECONFIG={endpoints.kubeconfig} PATH={endpoints.bin_dir}:$PATH\n"
        f"    source {endpoints.aws_env}\n"
        "    kubectl get ipb -A -w\n"
        "Ctrl-C here stops the operator and the environment."
    )


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _teams(endpoints: Endpoints, operator: subprocess.Popen) -> None:
    _say("Applying examples/tenancy/: two teams' namespaces, policies, tenant RBAC and bindings")
    print(kubectl(endpoints, "apply", "-f", str(TENANCY)), end="")
    started = time.monotonic()
    wait_until(lambda: _all_ready(endpoints, *TEAM_NAMESPACES), 120, "the teams' bindings to be Ready", {"operator": operator})
    _say(f"{TEAMS_READY} ({time.monotonic() - started:.1f} s)")
    print("    Try what docs/tenancy.md says a tenant cannot do, as team A's user:\n"
          "    kubectl --as alice -n team-b get ipb                  # forbidden: not its namespace\n"
          "    kubectl --as alice get ipp                            # allowed: policies are readable\n"
          "    kubectl --as alice -n team-a patch ipb web --subresource status --type merge -p '{\"status\":{}}'  # forbidden")


def _stop_on_ctrl_c() -> None:
    """Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt here, even if this process was started with
    SIGINT ignored (a non-interactive shell's background job, ``make test &``, passes that on), in
    which case Python installs no handler of its own and Ctrl-C would stop nothing."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)


def _run(directory: Path, tenancy: bool = False) -> int:
    _stop_on_ctrl_c()
    env = DevEnv(directory)
    operator: subprocess.Popen | None = None
    try:
        _say("Starting etcd, kube-apiserver and the local EC2 endpoint (moto)")
        endpoints = env.start()
        instances = seed(endpoints.ec2_endpoint_url, endpoints.region)
        if tenancy:
            instances.update(seed_teams(endpoints.ec2_endpoint_url, endpoints.region))
        print(f"    instances: {', '.join(f'{name}={iid}' for name, iid in instances.items())}")
        _say("Installing the CRDs, the tenancy policy of examples/policies/ and the admission webhook")
        webhook_env = prerequisites.install(endpoints, directory, failure_policy="Fail")
        _say("Starting the operator (its log follows)")
        operator = subprocess.Popen(
            [sys.executable, "-m", "instance_profile_operator.cli", "run", "--all-namespaces"],
            env={**os.environ, **endpoints.aws_variables(), **webhook_env, "KUBECONFIG": endpoints.kubeconfig},
            preexec_fn=_die_with_parent,
        )
        host, _, port = webhook_env["IPO_WEBHOOK_ADDRESS"].rpartition(":")
        wait_until(lambda: _listening(host, int(port)), 60, "the operator's admission webhook", {"operator": operator})
        _say("Applying examples/")
        print(kubectl(endpoints, "apply", "-n", "default", "-f", str(REPO / "examples")), end="")
        started = time.monotonic()
        wait_until(lambda: _all_ready(endpoints, "default"), 120, "the example bindings to be Ready", {"operator": operator})
        _say(f"{ALL_READY} ({time.monotonic() - started:.1f} s)")
        if tenancy:
            _teams(endpoints, operator)
        print(kubectl(endpoints, "get", "ipb", "-A", "-o", "wide"), flush=True)
        print(another_terminal(endpoints), flush=True)
        operator.wait()
        return operator.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(20)
            except subprocess.TimeoutExpired:
                operator.kill()
        env.stop()
        print("\nStopped.", flush=True)


def demo(directory: Path | None, tenancy: bool = False) -> int:
    if directory is not None:
        return _run(directory, tenancy)
    with tempfile.TemporaryDirectory(prefix="ipo-demo-") as temporary:
        return _run(Path(temporary), tenancy)
