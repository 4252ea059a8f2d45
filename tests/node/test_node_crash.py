"""A crash of the supervisor of `devenv up --node` (SIGKILL): its own children die with it, but
containers outlive containerd; `devenv down` still finds and stops them all and leaves the host
as it was. Needs root (CI runs as root)."""

from __future__ import annotations

import os
import signal
import uuid

from instance_profile_operator.devenv import node

from ..support.devenv import devenv_cli
from ..support.waiting import wait_for
from .conftest import NODE_TESTS, NodeEnv, host_state, node_processes, start_pod

pytestmark = NODE_TESTS


def test_down_after_a_killed_supervisor_stops_the_pods_and_leaves_the_host_as_it_was(node_env: NodeEnv):
    start_pod(node_env, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"sleeper-{uuid.uuid4().hex[:6]}"},
        "spec": {"containers": [{"name": "pause", "image": node.pause_image(), "imagePullPolicy": "Never"}]},
    })
    os.kill(int((node_env.directory / "supervisor.pid").read_text()), signal.SIGKILL)
    wait_for(lambda: not [pid for pid in node_processes() if os.readlink(f"/proc/{pid}/exe").endswith("/kubelet")],
             15, "kubelet to die with the supervisor")
    assert node_processes(), "the pod's processes outlive the supervisor until down"
    done = devenv_cli("down", "--dir", str(node_env.directory))
    assert done.returncode == 0, done.stderr
    after = host_state()
    for key, value in node_env.before.items():
        assert after[key] == value, key
    assert not node_processes()
