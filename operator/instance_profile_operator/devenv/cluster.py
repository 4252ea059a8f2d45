"""A real, local control plane and EC2 endpoint: etcd, kube-apiserver, kube-controller-manager
(namespace deletion, garbage collection, service-account tokens and root CA ConfigMaps behave as
on a real cluster) and a moto server.

Every process is started with ``PR_SET_PDEATHSIG`` so that it dies with the process that
started it: a crash, a SIGKILL or a Ctrl-C of the owner never leaves orphans.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from . import build, pki

DEFAULT_REGION = "us-east-1"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
STATE_FILE = "devenv.json"
_PR_SET_PDEATHSIG = 1

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources:
      - group: ec2.instanceprofiles.dev
      - group: ""
        resources: [events]
  - level: None
"""


@dataclass(frozen=True)
class Endpoints:
    """What a client needs to reach the environment; saved as ``DIR/devenv.json``."""

    directory: str
    kubeconfig: str
    aws_env: str
    apiserver_url: str
    ec2_endpoint_url: str
    etcd_url: str
    region: str
    admin_token: str
    ca_cert: str
    audit_log: str
    bin_dir: str

    @classmethod
    def load(cls, directory: Path) -> "Endpoints":
        return cls(**json.loads((directory / STATE_FILE).read_text()))

    def aws_variables(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.ec2_endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when its parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgid(0, 0)  # the terminal's Ctrl-C reaches only the owner, which stops us in order


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str, processes: dict[str, subprocess.Popen] | None = None,
               interval: float = 0.1) -> None:
    """Poll ``check`` every ``interval`` seconds until it returns true; fail early if a watched
    process exits."""
    deadline = time.monotonic() + timeout
    while True:
        for name, process in (processes or {}).items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode} while waiting for {what}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class DevEnv:
    """Start and stop the processes of one environment rooted at ``directory``."""

    def __init__(self, directory: Path, region: str = DEFAULT_REGION):
        self.directory = directory.resolve()
        self.region = region
        self.processes: dict[str, subprocess.Popen] = {}
        self.endpoints: Endpoints | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Endpoints:
        bins = build.ensure_built()
        try:
            self.endpoints = self._start(bins, timeout)
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def stop(self, timeout: float = 10.0) -> None:
        """Stop one by one in reverse order of start (the API server before its etcd);
        SIGKILL whatever does not exit in time."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    # -- internals -----------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, preexec_fn=_die_with_parent,
            )

    def _start(self, bins: Path, timeout: float) -> Endpoints:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        credentials = pki.generate(d / "pki")
        etcd_port, peer_port, api_port, moto_port = (free_port() for _ in range(4))
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn("etcd", [
            str(bins / "etcd"), "--name=devenv", f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=devenv={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._spawn("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)])

        admin_token, controller_manager_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        tokens = d / "pki" / "tokens.csv"
        # kube-controller-manager runs every controller with its own credentials
        # (--use-service-account-credentials=false), so it needs every right.
        tokens.write_text(f'{admin_token},devenv-admin,devenv-admin,"system:masters"\n'
                          f'{controller_manager_token},{CONTROLLER_MANAGER_USER},{CONTROLLER_MANAGER_USER},"system:masters"\n')
        tokens.chmod(0o600)
        (d / "audit-policy.yaml").write_text(AUDIT_POLICY)
        audit_log = d / "logs" / "audit.log"
        self._spawn("kube-apiserver", [
            str(bins / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--tls-cert-file={credentials.serving_cert}", f"--tls-private-key-file={credentials.serving_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={credentials.service_account_pub}",
            f"--service-account-signing-key-file={credentials.service_account_key}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/24",
            f"--audit-policy-file={d / 'audit-policy.yaml'}", f"--audit-log-path={audit_log}",
            "--audit-log-mode=batch", "--audit-log-batch-max-wait=1s",
            f"--cert-dir={d / 'pki'}",
        ])

        wait_until(lambda: _http_get(f"{etcd_url}/health").startswith('{"health":"true"'), timeout, "etcd", self.processes)
        ssl_context = ssl.create_default_context(cafile=str(credentials.ca_cert))
        api_url = f"https://127.0.0.1:{api_port}"
        headers = {"Authorization": f"Bearer {admin_token}"}
        wait_until(lambda: _http_get(f"{api_url}/readyz", headers, ssl_context) == "ok", timeout, "kube-apiserver /readyz", self.processes)
        wait_until(lambda: _http_get(f"{api_url}/api/v1/namespaces/default", headers, ssl_context), timeout, "the default namespace", self.processes)
        controller_manager_kubeconfig = d / "pki" / "controller-manager.kubeconfig"
        _write_kubeconfig(controller_manager_kubeconfig, api_url, credentials.ca_cert, controller_manager_token)
        self._spawn("kube-controller-manager", [
            str(build.CONTROLLER_MANAGER.bin_dir() / "kube-controller-manager"),
            f"--kubeconfig={controller_manager_kubeconfig}",
            f"--root-ca-file={credentials.ca_cert}",
            f"--service-account-private-key-file={credentials.service_account_key}",
            "--use-service-account-credentials=false", "--leader-elect=false",
            "--allocate-node-cidrs=false", "--controllers=*",
            "--secure-port=0",  # no health endpoint needed: the supervisor watches the process
        ])
        moto_url = f"http://127.0.0.1:{moto_port}"
        wait_until(lambda: _http_get(f"{moto_url}/moto-api/data.json") is not None, timeout, "moto server", self.processes)

        endpoints = Endpoints(
            directory=str(d), kubeconfig=str(d / "kubeconfig"), aws_env=str(d / "aws.env"),
            apiserver_url=api_url, ec2_endpoint_url=moto_url, etcd_url=etcd_url, region=self.region,
            admin_token=admin_token, ca_cert=str(credentials.ca_cert), audit_log=str(audit_log),
            bin_dir=str(bins),
        )
        _write_kubeconfig(Path(endpoints.kubeconfig), api_url, credentials.ca_cert, admin_token)
        Path(endpoints.aws_env).write_text(
            "".join(f"export {key}={value}\n" for key, value in endpoints.aws_variables().items())
        )
        (d / STATE_FILE).write_text(json.dumps(asdict(endpoints), indent=2) + "\n")
        return endpoints


def _http_get(url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=2, context=context) as response:
        return response.read().decode()


def _write_kubeconfig(path: Path, server: str, ca_cert: Path, token: str) -> None:
    ca_data = base64.b64encode(ca_cert.read_bytes()).decode()
    path.write_text(json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devenv", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": "devenv-admin", "user": {"token": token}}],
        "contexts": [{"name": "devenv", "context": {"cluster": "devenv", "user": "devenv-admin", "namespace": "default"}}],
        "current-context": "devenv",
    }, indent=2) + "\n")
    path.chmod(0o600)
