"""One dev node per test module (`devenv up --node`; one node per machine, so modules take turns),
and helpers to drive it as a user does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from instance_profile_operator.devenv import node
from instance_profile_operator.devenv.cluster import Endpoints

from ..support.devenv import devenv_cli
from ..support.kube import kubectl

NODE_TESTS = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="the dev node needs root: kubelet, containerd, a bridge, iptables "
                                                 "(CI runs as root)"),
]
NEEDS_IMAGE_BUILDER = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("mmdebstrap")),
    reason="building the image needs buildah and mmdebstrap (apt-get install buildah mmdebstrap; .ci/run does)")


def lines(*argv: str) -> list[str]:
    return [line.rstrip() for line in subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()]


def host_state() -> dict[str, object]:
    """What the node may change on the host, in comparable form."""
    rules = [re.sub(r"\[\d+:\d+\]", "", line) for command in ("iptables-save", "ip6tables-save")
             for line in lines(command) if not line.startswith("#")]
    hierarchies = [h for h in Path("/sys/fs/cgroup").iterdir() if (h / "cgroup.procs").exists()]
    return {
        "routes": lines("ip", "route", "show", "table", "all"),
        "ipv6 routes": lines("ip", "-6", "route", "show", "table", "all"),
        "links": sorted(line.split(":")[1].strip() for line in lines("ip", "-o", "link", "show")),
        "rules": rules,
        "nftables": lines("nft", "list", "ruleset"),
        "mounts": sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()),
        "sysctls": {name: (Path("/proc/sys") / name).read_text() for name in node.SYSCTLS},
        "cgroups": sorted(str(c) for h in hierarchies for c in h.iterdir() if c.is_dir()),
        "paths": [path for path in (*node.HOST_PATHS, str(node.LOCK_FILE)) if os.path.lexists(path)],
    }


@dataclass(frozen=True)
class NodeEnv:
    directory: Path
    endpoints: Endpoints
    before: dict[str, object]


@pytest.fixture(scope="module")
def node_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeEnv]:
    directory = tmp_path_factory.mktemp("node") / "env"
    before = host_state()
    done = devenv_cli("up", "--dir", str(directory), "--node", timeout=900)
    assert done.returncode == 0, done.stderr + done.stdout
    yield NodeEnv(directory, Endpoints.load(directory), before)
    devenv_cli("down", "--dir", str(directory))



def exported(env: NodeEnv) -> dict[str, str]:
    """What ``devenv env`` exports (values need no unquoting here: no spaces)."""
    done = devenv_cli("env", "--dir", str(env.directory))
    assert done.returncode == 0, done.stderr
    return dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())


def start_pod(env: NodeEnv, pod: dict, condition: str = "condition=Ready") -> str:
    """Create ``pod`` in ``default``; its name once ``condition`` holds (kubectl wait --for)."""
    kubectl(env.endpoints, "apply", "-n", "default", "-f", "-", input=json.dumps(pod))
    name = pod["metadata"]["name"]
    kubectl(env.endpoints, "wait", "-n", "default", f"--for={condition}", f"pod/{name}", "--timeout=60s")
    return name


def load_image(env: NodeEnv) -> str:
    """``devenv.image load``: the operator's image in the node's runtime; its reference."""
    done = subprocess.run([sys.executable, "-m", "instance_profile_operator.devenv.image", "load",
                           "--dir", str(env.directory)], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


def node_processes() -> list[str]:
    """PIDs of the node's programs (kubelet, containerd, shims, pods), wherever they run."""
    binaries = ("kubelet", "kube-scheduler", "containerd", "containerd-shim-runc-v2", "podcheck", "pause")
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "exe")).name in binaries:
                found.append(entry.name)
        except OSError:
            continue
    return found
