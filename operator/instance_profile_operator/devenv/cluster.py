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

from . import build, node, pki
from .node import Node

DEFAULT_REGION = "us-east-1"
ADMIN_USER = "devenv-admin"
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
    node: bool = False  # a real node runs: everything listens on node.NODE_IP, pods reach it

    @classmethod
    def load(cls, directory: Path) -> "Endpoints":
        return cls(**json.loads((directory / STATE_FILE).read_text()))

    def in_cluster_ec2_endpoint_url(self) -> str:
        """The EC2 endpoint as pods reach it: the same address, as moto listens on the node's."""
        if not self.node:
            raise RuntimeError("no node runs in this environment (devenv up --node)")
        return self.ec2_endpoint_url

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
    """Start and stop the processes of one environment rooted at ``directory``; with ``node``, a
    real single-node cluster too (see node.py; needs root)."""

    def __init__(self, directory: Path, region: str = DEFAULT_REGION, node: bool = False):
        self.directory = directory.resolve()
        self.region = region
        self.node = Node(self.directory) if node else None
        self.processes: dict[str, subprocess.Popen] = {}
        self.endpoints: Endpoints | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Endpoints:
        bins = build.ensure_built(node=self.node is not None)
        try:
            self.endpoints = self._start(bins, timeout)
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def stop(self, timeout: float = 10.0) -> None:
        """Stop one by one in reverse order of start (kubelet first, the API server before its
        etcd); SIGKILL whatever does not exit in time; then undo the node's changes to the host."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if name == "containerd":
                node.stop_pods()  # before the API server they hold watches on
        self.processes.clear()
        if self.node is not None:
            node.teardown(self.directory)  # once nothing uses the node's address any more

    # -- internals -----------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, preexec_fn=_die_with_parent,
            )
        return self.processes[name]

    def _start(self, bins: Path, timeout: float) -> Endpoints:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, api_port, moto_port = (free_port() for _ in range(4))
        # Without a node everything listens on loopback; with one, on the node's address, which
        # pods reach too (still an address of this machine only).
        host = "127.0.0.1"
        if self.node is not None:
            self.node.prepare_host(api_port)
            host = node.NODE_IP
        credentials = pki.generate(d / "pki", (node.NODE_IP, node.KUBERNETES_SERVICE_IP) if self.node else ())
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn("etcd", [
            str(bins / "etcd"), "--name=devenv", f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=devenv={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._spawn("moto", [sys.executable, "-m", "moto.server", "-H", host, "-p", str(moto_port)])

        tokens = {user: secrets.token_urlsafe(32) for user, _ in self._identities()}
        tokens_file = d / "pki" / "tokens.csv"
        tokens_file.write_text("".join(f'{tokens[user]},{user},{user},"{group}"\n' for user, group in self._identities()))
        tokens_file.chmod(0o600)
        (d / "audit-policy.yaml").write_text(AUDIT_POLICY)
        audit_log = d / "logs" / "audit.log"
        # With a node, the API server reaches Services through their endpoints (pod IPs on the bridge):
        # a webhook's Service and the service proxy answer with no kube-proxy and no rule on the host.
        node_flags = ["--authorization-mode=Node,RBAC", "--kubelet-preferred-address-types=InternalIP",
                      "--enable-aggregator-routing=true"] \
            if self.node else ["--authorization-mode=RBAC"]
        self._spawn("kube-apiserver", [
            str(bins / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={host}", f"--advertise-address={host}", f"--secure-port={api_port}",
            f"--tls-cert-file={credentials.serving_cert}", f"--tls-private-key-file={credentials.serving_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={credentials.service_account_pub}",
            f"--service-account-signing-key-file={credentials.service_account_key}",
            f"--token-auth-file={tokens_file}",
            *node_flags,
            f"--service-cluster-ip-range={node.SERVICE_CIDR}",
            f"--audit-policy-file={d / 'audit-policy.yaml'}", f"--audit-log-path={audit_log}",
            "--audit-log-mode=batch", "--audit-log-batch-max-wait=1s",
            f"--cert-dir={d / 'pki'}",
        ])

        wait_until(lambda: _http_get(f"{etcd_url}/health").startswith('{"health":"true"'), timeout, "etcd", self.processes)
        ssl_context = ssl.create_default_context(cafile=str(credentials.ca_cert))
        api_url = f"https://{host}:{api_port}"
        headers = {"Authorization": f"Bearer {tokens[ADMIN_USER]}"}
        wait_until(lambda: _http_get(f"{api_url}/readyz", headers, ssl_context) == "ok", timeout, "kube-apiserver /readyz", self.processes)
        wait_until(lambda: _http_get(f"{api_url}/api/v1/namespaces/default", headers, ssl_context), timeout, "the default namespace", self.processes)
        kubeconfigs = {}
        for user, _ in self._identities():
            kubeconfigs[user] = d / "pki" / f"{user.replace(':', '-')}.kubeconfig"
            _write_kubeconfig(kubeconfigs[user], api_url, credentials.ca_cert, tokens[user])
        self._spawn("kube-controller-manager", [
            str(build.CONTROLLER_MANAGER.bin_dir() / "kube-controller-manager"),
            f"--kubeconfig={kubeconfigs[CONTROLLER_MANAGER_USER]}",
            f"--root-ca-file={credentials.ca_cert}",
            f"--service-account-private-key-file={credentials.service_account_key}",
            "--use-service-account-credentials=false", "--leader-elect=false",
            "--allocate-node-cidrs=false", "--controllers=*",
            f"--flex-volume-plugin-dir={d / 'volume-plugins'}",  # not /usr/libexec/kubernetes
            "--secure-port=0",  # no health endpoint needed: the supervisor watches the process
        ])
        moto_url = f"http://{host}:{moto_port}"
        wait_until(lambda: _http_get(f"{moto_url}/moto-api/data.json") is not None, timeout, "moto server", self.processes)
        if self.node is not None:
            self._start_node(kubeconfigs, lambda path: json.loads(_http_get(f"{api_url}{path}", headers, ssl_context)), timeout)

        endpoints = Endpoints(
            directory=str(d), kubeconfig=str(d / "kubeconfig"), aws_env=str(d / "aws.env"),
            apiserver_url=api_url, ec2_endpoint_url=moto_url, etcd_url=etcd_url, region=self.region,
            admin_token=tokens[ADMIN_USER], ca_cert=str(credentials.ca_cert), audit_log=str(audit_log),
            bin_dir=str(bins), node=self.node is not None,
        )
        _write_kubeconfig(Path(endpoints.kubeconfig), api_url, credentials.ca_cert, tokens[ADMIN_USER])
        Path(endpoints.aws_env).write_text(
            "".join(f"export {key}={value}\n" for key, value in endpoints.aws_variables().items())
        )
        (d / STATE_FILE).write_text(json.dumps(asdict(endpoints), indent=2) + "\n")
        return endpoints

    def _identities(self) -> list[tuple[str, str]]:
        """(user, group) of each client of the API server, each with its own token. The
        controller manager runs every controller with its own credentials
        (--use-service-account-credentials=false), so it needs every right; kubelet is a node
        (the Node authorizer); the scheduler has its bootstrap role."""
        identities = [(ADMIN_USER, "system:masters"), (CONTROLLER_MANAGER_USER, "system:masters")]
        if self.node is not None:
            identities += [(f"system:node:{node.NODE_NAME}", "system:nodes"),
                           ("system:kube-scheduler", "system:authenticated")]
        return identities

    def _start_node(self, kubeconfigs: dict[str, Path], get, timeout: float) -> None:
        """containerd (in the node's cgroup, with the local images), kube-scheduler, kubelet;
        ready once the Node is Ready and the default ServiceAccount exists."""
        assert self.node is not None
        containerd = self._spawn("containerd", self.node.containerd_argv(), env=self.node.containerd_env())
        self.node.adopt(containerd.pid)
        wait_until(self.node.containerd_socket.exists, timeout, "containerd's socket", self.processes)
        self.node.import_local_images()
        self._spawn("kube-scheduler", self.node.scheduler_argv(kubeconfigs["system:kube-scheduler"]))
        self._spawn("kubelet", self.node.kubelet_argv(kubeconfigs[f"system:node:{node.NODE_NAME}"]))

        def node_ready() -> bool:
            conditions = get(f"/api/v1/nodes/{node.NODE_NAME}")["status"].get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_until(node_ready, timeout, "the node to be Ready", self.processes, interval=0.5)
        wait_until(lambda: get("/api/v1/namespaces/default/serviceaccounts/default"), timeout,
                   "the default ServiceAccount", self.processes, interval=0.5)


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
