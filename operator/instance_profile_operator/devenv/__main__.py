"""``python -m instance_profile_operator.devenv {build,up,down,env,demo}``.

``up`` starts a detached supervisor that owns etcd, kube-apiserver, kube-controller-manager and
moto (each dies with it) and returns once all are ready; ``down`` stops the supervisor and
removes the state.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import build, gotools, node, prerequisites
from .cluster import DevEnv, Endpoints, wait_until
from .seed import seed

READY_MARKER = "ready"
PID_FILE = "supervisor.pid"
INSTANCES_FILE = "instances.json"
OPERATOR_ENV = "operator.env"
CREATED = ("kubeconfig", "aws.env", OPERATOR_ENV, "devenv.json", INSTANCES_FILE, READY_MARKER, PID_FILE,
           "audit-policy.yaml", "pki", "webhook", "etcd", "logs", "node",
           "volume-plugins")


def supervise(directory: Path, with_node: bool) -> int:
    """Run the environment until SIGTERM/SIGINT or until one of its processes dies."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    env = DevEnv(directory, node=with_node)
    try:
        endpoints = env.start()
        instances = seed(endpoints.ec2_endpoint_url, endpoints.region)
        (directory / INSTANCES_FILE).write_text(json.dumps(instances, indent=2) + "\n")
        # Ignore: without an operator serving the webhook, kubectl apply still works
        webhook_env = prerequisites.install(endpoints, directory, failure_policy="Ignore")
        (directory / OPERATOR_ENV).write_text("".join(f"export {k}={v}\n" for k, v in webhook_env.items()))
        (directory / READY_MARKER).touch()
        while not stop.wait(1.0):
            dead = [name for name, p in env.processes.items() if p.poll() is not None]
            if dead:
                print(f"devenv: {', '.join(dead)} exited; stopping the environment", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        env.stop()
        (directory / READY_MARKER).unlink(missing_ok=True)


def up(directory: Path, timeout: float, with_node: bool = False) -> int:
    directory = directory.resolve()
    if (directory / PID_FILE).exists():
        print(f"an environment already runs in {directory}; run 'down' first", file=sys.stderr)
        return 1
    if with_node and (missing := node.missing_prerequisites()):
        print("devenv up --node needs: " + "; ".join(missing), file=sys.stderr)
        return 1
    build.ensure_built(node=with_node)
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(directory / "logs" / "supervisor.log", "ab") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "instance_profile_operator.devenv", "_supervise", "--dir", str(directory),
             *(["--node"] if with_node else [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    (directory / PID_FILE).write_text(f"{supervisor.pid}\n")
    try:
        wait_until(lambda: (directory / READY_MARKER).exists(), timeout, "the environment", {"supervisor": supervisor})
    except BaseException as error:  # Ctrl-C included: never leave a half-started environment
        _stop_supervisor(directory)
        node.teardown(directory)
        print(f"devenv failed: {error}; logs in {directory / 'logs'}", file=sys.stderr)
        return 1
    instances = json.loads((directory / INSTANCES_FILE).read_text())
    print(f"ready in {time.monotonic() - started:.1f} s")
    print(f'  eval "$({sys.executable} -m instance_profile_operator.devenv env --dir {directory})"'
          f"   # KUBECONFIG, PATH (kubectl {build.KUBERNETES_VERSION}, helm), AWS_*")
    print(f"  source {directory / OPERATOR_ENV}   # for instance-profile-operator run: its admission webhook")
    print(f"  instances: {', '.join(f'{name}={iid}' for name, iid in instances.items())}")
    return 0


def environment(directory: Path) -> str:
    """``export`` lines for a shell: the environment's kubeconfig, kubectl and helm first on
    PATH, the AWS variables for the host and, with a node, the EC2 endpoint as pods reach it."""
    endpoints = Endpoints.load(directory.resolve())
    variables = {"KUBECONFIG": endpoints.kubeconfig, **endpoints.aws_variables()}
    if endpoints.node:
        variables["IPO_IN_CLUSTER_AWS_ENDPOINT_URL"] = endpoints.in_cluster_ec2_endpoint_url()
    lines = [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
    tools = ":".join(shlex.quote(str(path)) for path in (endpoints.bin_dir, gotools.HELM.binary().parent))
    lines.append(f'export PATH={tools}:"$PATH"')
    return "".join(f"{line}\n" for line in lines)


def _stop_supervisor(directory: Path, timeout: float = 20.0) -> None:
    pid_file = directory / PID_FILE
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)  # its children follow through PDEATHSIG
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)


def down(directory: Path) -> int:
    directory = directory.resolve()
    _stop_supervisor(directory)
    node.teardown(directory)  # the supervisor does it, unless it was killed
    for name in CREATED:
        path = directory / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if directory.exists() and not any(directory.iterdir()):
        directory.rmdir()
    print(f"stopped and removed {directory}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instance_profile_operator.devenv", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build the control plane (with --node, a node's binaries too) if missing")
    build_parser.add_argument("--node", action="store_true")
    for name, text in (("up", "start the environment in the background"), ("down", "stop it and remove its state"),
                       ("env", "print export lines for a shell: eval \"$(... env --dir D)\""),
                       ("_supervise", argparse.SUPPRESS)):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dir", type=Path, required=True, help="state directory (kubeconfig, aws.env, logs)")
        if name == "up":
            sub.add_argument("--timeout", type=float, default=120.0)
        if name in ("up", "_supervise"):
            sub.add_argument("--node", action="store_true",
                             help="with a real node: containerd, kubelet, kube-scheduler (needs root)")
    demo_parser = commands.add_parser("demo", help="environment + CRD + operator + examples, in the foreground")
    demo_parser.add_argument("--dir", type=Path, default=None, help="state directory (default: a temporary one)")
    demo_parser.add_argument("--tenancy", action="store_true",
                             help="also docs/tenancy.md's two teams: examples/tenancy/ in the demo's account and a second one")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build.ensure_built(node=args.node))
        return 0
    if args.command == "up":
        return up(args.dir, args.timeout, args.node)
    if args.command == "down":
        return down(args.dir)
    if args.command == "env":
        print(environment(args.dir), end="")
        return 0
    if args.command == "_supervise":
        return supervise(args.dir.resolve(), args.node)
    from .demo import demo

    return demo(args.dir, args.tenancy)


if __name__ == "__main__":
    sys.exit(main())
