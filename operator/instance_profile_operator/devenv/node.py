"""A real single-node cluster beside the dev environment (``devenv up --node``; needs root):
containerd 2.x with Debian's runc and CNI plugins, kubelet and kube-scheduler.

Every packet stays on this machine. Before any pod starts:

* the node's address, ``NODE_IP``, is the pods' gateway on a bridge of our own, where the API
  server, moto and kubelet listen; pods get routes to their bridge and to the Service range only
  (no default route, no DNS server, no masquerading), and the host forwards nothing (IP forwarding
  stays off, and a filter chain drops whatever would cross from the bridge to any other link);
* the Service range is ``unreachable`` except through the one DNAT rule that serves the
  ``kubernetes`` Service (``10.96.0.1:443`` → the API server), and so is the pods' range but
  through the bridge: no packet for either ever takes the default route, even with the
  bridge gone;
* teardown removes the bridge only once every process that dials the node's address is gone.

One node per machine (kubelet and containerd use a few fixed host paths): a lock file says whose.
What the node changes on the host (sysctls, fixed paths, iptables chains, cgroups, mounts, the
bridge and the routes) is recorded before the first change in ``DIR/node/host.json``, and
``teardown`` puts it all back, also after a crash of the supervisor (``devenv down`` calls it).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from . import build, gotools, ociarchive

NODE_NAME = "devenv-node"
BRIDGE = "ipo-node0"
POD_CIDR = "10.88.0.0/24"
NODE_IP = "10.88.0.1"
SERVICE_CIDR = "10.96.0.0/24"
FALLBACK_METRIC = "4242"  # the pods' range is unreachable when the bridge's own route is gone
KUBERNETES_SERVICE_IP = "10.96.0.1"
RUN_DIR = Path("/run/ipo-node")  # containerd's state and socket: short, fixed paths
LOCK_FILE = Path("/run/ipo-node.lock")
CGROUP = "ipo-node"  # in every cgroup v1 hierarchy: containerd, its shims, and the pods below
CGROUP_ROOT = Path("/sys/fs/cgroup")
NAT_CHAIN = "IPO-NODE-SERVICES"
FILTER_CHAIN = "IPO-NODE-FORWARD"
# Chains kubelet (KUBE-*) and we (IPO-NODE-*) create; removed at teardown unless there before.
OWN_CHAIN_PREFIXES = ("KUBE-", "IPO-NODE-")
TABLES = ("filter", "nat", "mangle")
IPTABLES = ("iptables", "ip6tables")
# kubelet sets the first three; the others are recorded to prove they never change.
SYSCTLS = ("kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "net/ipv4/ip_forward",
           "net/ipv4/conf/all/route_localnet", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
# Fixed paths kubelet and containerd create outside their configured directories.
HOST_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/containerd",
              "/run/netns", "/run/nri", "/opt/containerd", "/etc/cni", "/usr/libexec/kubernetes", "/etc/cdi",
              "/run/cdi", str(RUN_DIR))
PAUSE_IMAGE = "localhost/ipo-pause"
PODCHECK_IMAGE = "localhost/ipo-podcheck"
CNI_PLUGINS = Path("/usr/lib/cni")
HOST_STATE = "host.json"


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a node, each with how to get it."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (kubelet, containerd, the bridge and iptables need it)")
    for command, package in (("runc", "runc"), ("iptables", "iptables"), ("ip6tables", "iptables"), ("ip", "iproute2")):
        if shutil.which(command) is None:
            missing.append(f"{command} (apt-get install {package})")
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_PLUGINS / plugin).exists():
            missing.append(f"{CNI_PLUGINS / plugin} (apt-get install containernetworking-plugins)")
    return missing


def _run(*argv: str, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def _sysctl(name: str) -> str:
    return (Path("/proc/sys") / name).read_text().strip()


def _hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (cpu, memory, pids..., name=systemd)."""
    return sorted(path for path in CGROUP_ROOT.iterdir()
                  if path.is_dir() and not path.is_symlink() and (path / "cgroup.procs").exists())


def _nft_tables() -> list[str]:
    """``FAMILY NAME`` of each nftables table (iptables-nft makes them on first use)."""
    if shutil.which("nft") is None:
        return []
    return [line.removeprefix("table ") for line in _run("nft", "list", "tables").splitlines()]


def _chains(command: str, table: str) -> set[str]:
    return {line.split()[1] for line in _run(command, "-t", table, "-S").splitlines() if line.startswith("-N ")}


class Node:
    """The node of the environment in ``directory``: host preparation, processes' arguments,
    and teardown."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.root = directory / "node"
        self._lock: int | None = None

    # -- host --------------------------------------------------------------------------------

    def prepare_host(self, api_port: int) -> None:
        """Take the machine's node lock, record the host, then make the network: the bridge
        with ``NODE_IP``, the unreachable Service range, the DNAT and forward-guard chains."""
        missing = missing_prerequisites()
        if missing:
            raise SystemExit("the dev node needs: " + "; ".join(missing))
        self.root.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        state = {
            "sysctls": {name: _sysctl(name) for name in SYSCTLS},
            "existing_paths": [path for path in HOST_PATHS if os.path.lexists(path)],
            "chains": {command: {table: sorted(_chains(command, table)) for table in TABLES} for command in IPTABLES},
            "nft_tables": _nft_tables(),
        }
        (self.root / HOST_STATE).write_text(json.dumps(state, indent=2) + "\n")
        # The fallbacks first: were the bridge gone while a process still dials the node's
        # address (a crash, a teardown), its packets meet these rather than the default route.
        _run("ip", "route", "add", "unreachable", POD_CIDR, "metric", FALLBACK_METRIC)
        _run("ip", "route", "add", "unreachable", SERVICE_CIDR)
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
        (Path("/proc/sys/net/ipv6/conf") / BRIDGE / "disable_ipv6").write_text("1")  # IPv4 only, not even link-local
        _run("ip", "link", "set", BRIDGE, "up")
        _run("iptables", "-t", "nat", "-N", NAT_CHAIN)
        _run("iptables", "-t", "nat", "-A", NAT_CHAIN, "-d", f"{KUBERNETES_SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
             "-j", "DNAT", "--to-destination", f"{NODE_IP}:{api_port}")
        _run("iptables", "-t", "nat", "-I", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN)
        _run("iptables", "-t", "filter", "-N", FILTER_CHAIN)
        _run("iptables", "-t", "filter", "-A", FILTER_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
        _run("iptables", "-t", "filter", "-A", FILTER_CHAIN, "-o", BRIDGE, "!", "-i", BRIDGE, "-j", "DROP")
        _run("iptables", "-t", "filter", "-I", "FORWARD", "-j", FILTER_CHAIN)
        for hierarchy in _hierarchies():
            cgroup = hierarchy / CGROUP
            cgroup.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset is empty until given these
                if (cgroup / name).exists():
                    (cgroup / name).write_text((hierarchy / name).read_text())

    def _take_lock(self) -> None:
        descriptor = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(descriptor, 4096).decode().strip()
            os.close(descriptor)
            raise SystemExit(f"a dev node already runs on this machine ({owner}); stop it with devenv down") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{self.directory}\n".encode())
        self._lock = descriptor  # held (and released) by the supervisor's process

    def adopt(self, pid: int) -> None:
        """Put a process (containerd: its shims follow) in the node's cgroup, so teardown finds
        every process the node started, wherever they were reparented."""
        for hierarchy in _hierarchies():
            (hierarchy / CGROUP / "cgroup.procs").write_text(f"{pid}\n")

    # -- processes ---------------------------------------------------------------------------

    @property
    def containerd_socket(self) -> Path:
        return RUN_DIR / "containerd.sock"

    def containerd_argv(self) -> list[str]:
        config = self.root / "containerd.toml"
        config.write_text(self._containerd_config())
        cni = self.root / "cni"
        cni.mkdir(exist_ok=True)
        (cni / "10-ipo-node.conflist").write_text(json.dumps(self._cni_config(), indent=2) + "\n")
        return [str(build.NODE.bin_dir() / "containerd"), "--config", str(config)]

    def containerd_env(self) -> dict[str, str]:
        # containerd finds its shim on PATH: ours first, never another containerd's
        return {**os.environ, "PATH": f"{build.NODE.bin_dir()}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"}

    def _containerd_config(self) -> str:
        cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
        return f"""\
version = 3
root = "{self.root / 'containerd'}"
state = "{RUN_DIR / 'containerd'}"
# NRI and the /opt installer write to fixed host paths; nothing here needs them
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{self.containerd_socket}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause_image()}"

[{cri_runtime}]
  enable_cdi = false
  # the machine's container lacks CAP_SYS_RESOURCE: runc may not lower oom_score_adj
  restrict_oom_score_adj = true
  [{cri_runtime}.cni]
    bin_dirs = ["{CNI_PLUGINS}"]
    conf_dir = "{self.root / 'cni'}"
    max_conf_num = 1
  [{cri_runtime}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [{cri_runtime}.containerd.runtimes.runc.options]
      BinaryName = "{shutil.which('runc')}"
      SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
"""

    def _cni_config(self) -> dict:
        """A bridge the plugin does not manage as a gateway (so it never turns IP forwarding on):
        the gateway address is ours, and the only routes are the Service range's."""
        return {
            "cniVersion": "1.0.0",
            "name": "ipo-node",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": False, "ipMasq": False, "hairpinMode": True,
                "ipam": {
                    "type": "host-local", "dataDir": str(self.root / "cni-ipam"),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": SERVICE_CIDR, "gw": NODE_IP}],
                },
            }],
        }

    def kubelet_argv(self, kubeconfig: Path) -> list[str]:
        root = self.root / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        config = self.root / "kubelet.yaml"
        config.write_text(yaml.safe_dump(self._kubelet_config()))
        return [
            str(build.NODE.bin_dir() / "kubelet"), f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={root}", f"--cert-dir={self.root / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
        ]

    def _kubelet_config(self) -> dict:
        endpoint = f"unix://{self.containerd_socket}"
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{CGROUP}",
            "containerRuntimeEndpoint": endpoint, "imageServiceEndpoint": endpoint,
            "failSwapOn": False, "protectKernelDefaults": False,
            "address": NODE_IP, "port": 10250, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1", "healthzPort": 0,
            # a dev node only: the API server's calls (logs, exec) are not authenticated
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 99, "imageGCLowThresholdPercent": 98,
            "maxPods": 20, "resolvConf": "",  # no DNS server: a pod resolves no name
            "volumePluginDir": str(self.root / "volume-plugins"),
            "podLogsDir": str(self.root / "pod-logs"),
            "serializeImagePulls": False,
        }

    def scheduler_argv(self, kubeconfig: Path) -> list[str]:
        return [str(build.NODE.bin_dir() / "kube-scheduler"), f"--kubeconfig={kubeconfig}", "--leader-elect=false",
                "--secure-port=0"]

    # -- images ------------------------------------------------------------------------------

    def import_local_images(self) -> None:
        """The pause image and the test pods' image, written as archives and imported."""
        for tool, repository in ((gotools.PAUSE, PAUSE_IMAGE), (gotools.PODCHECK, PODCHECK_IMAGE)):
            binary = gotools.ensure_built(tool)
            archive = self.root / f"{tool.name}.oci.tar"
            ociarchive.write(archive, ociarchive.reference(repository, binary), binary, [f"/{binary.name}"])
            self.ctr("images", "import", str(archive))
            archive.unlink()

    def ctr(self, *args: str) -> str:
        return _run(str(build.NODE.bin_dir() / "ctr"), "--address", str(self.containerd_socket), "-n", "k8s.io", *args)


def pause_image() -> str:
    return ociarchive.reference(PAUSE_IMAGE, gotools.PAUSE.binary())


def podcheck_image() -> str:
    return ociarchive.reference(PODCHECK_IMAGE, gotools.PODCHECK.binary())


# -- teardown ------------------------------------------------------------------------------------

def teardown(directory: Path) -> None:
    """Undo what the node of ``directory`` did to the host; safe to call more than once."""
    root = directory / "node"
    state_file = root / HOST_STATE
    if not state_file.exists():
        return
    state = json.loads(state_file.read_text())
    if LOCK_FILE.exists() and LOCK_FILE.read_text().strip() not in ("", str(directory)):
        shutil.rmtree(root, ignore_errors=True)  # another environment's node runs now: not ours to undo
        return
    _kill_cgroup()
    _unmount_under([str(root), str(RUN_DIR), "/run/netns", "/var/lib/kubelet", "/run/containerd"])
    _remove_cgroup()
    _remove_chains(state["chains"])
    _remove_empty_nft_tables(state["nft_tables"])
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _run("ip", "link", "del", BRIDGE)
    _run("ip", "route", "del", "unreachable", SERVICE_CIDR, check=False)
    _run("ip", "route", "del", "unreachable", POD_CIDR, "metric", FALLBACK_METRIC, check=False)
    for name, value in state["sysctls"].items():
        if _sysctl(name) != value:
            (Path("/proc/sys") / name).write_text(value)
    for path in HOST_PATHS:
        if path not in state["existing_paths"] and os.path.lexists(path):
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    shutil.rmtree(root, ignore_errors=True)
    LOCK_FILE.unlink(missing_ok=True)


def stop_pods() -> None:
    """SIGKILL every container, shim and containerd of the node (all in its cgroup)."""
    _kill_cgroup()


def _cgroup_processes() -> set[int]:
    found = set()
    for hierarchy in _hierarchies():
        top = hierarchy / CGROUP
        if top.exists():
            for procs in top.rglob("cgroup.procs"):
                found |= {int(pid) for pid in procs.read_text().split()}
    return found


def _kill_cgroup(timeout: float = 20.0) -> None:
    """SIGKILL containerd, its shims and every container: all in the node's cgroup."""
    deadline = time.monotonic() + timeout
    while remaining := _cgroup_processes():
        for pid in remaining:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of the node survive SIGKILL: {sorted(remaining)}")
        time.sleep(0.1)


def _unmount_under(prefixes: list[str]) -> None:
    """Unmount every mount below ``prefixes``, deepest first (kubelet's shared root included)."""
    for _ in range(5):  # shared propagation can surface a mount again once its parent goes
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        mine = sorted({m for m in mounts if any(m == p or m.startswith(p.rstrip("/") + "/") for p in prefixes)},
                      key=len, reverse=True)
        if not mine:
            return
        for mount in mine:
            _run("umount", "--lazy", mount, check=False)


def _remove_cgroup() -> None:
    for hierarchy in _hierarchies():
        top = hierarchy / CGROUP
        if top.exists():
            for cgroup in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                cgroup.rmdir()
            top.rmdir()


def _remove_empty_nft_tables(before: list[str]) -> None:
    """The tables iptables-nft made for the node, once empty again: the ruleset as it was."""
    for table in set(_nft_tables()) - set(before):
        family, name = table.split()
        command = {"ip": "iptables", "ip6": "ip6tables"}.get(family)
        if command and name in TABLES and all(rule.startswith("-P ") for rule in _run(command, "-t", name, "-S").splitlines()):
            _run("nft", "delete", "table", family, name)


def _remove_chains(before: dict[str, dict[str, list[str]]]) -> None:
    """Delete the chains the node added (ours and kubelet's) and every rule that jumps to them."""
    for command in IPTABLES:
        for table in TABLES:
            added = {chain for chain in _chains(command, table)
                     if chain.startswith(OWN_CHAIN_PREFIXES) and chain not in before[command][table]}
            if not added:
                continue
            for rule in _run(command, "-t", table, "-S").splitlines():
                words = shlex.split(rule)
                if words[0] == "-A" and words[1] not in added and "-j" in words and words[words.index("-j") + 1] in added:
                    _run(command, "-t", table, "-D", *words[1:])
            for chain in added:
                _run(command, "-t", table, "-F", chain)
            for chain in added:
                _run(command, "-t", table, "-X", chain)
