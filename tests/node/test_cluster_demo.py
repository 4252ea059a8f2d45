"""``make cluster-demo``: the node up, the image loaded, the chart installed with two replicas, the
examples Ready, and the commands for another terminal at the end. Needs root (CI runs as root)."""

from __future__ import annotations

import subprocess
import sys

from ..support.devenv import devenv_cli
from .conftest import NEEDS_IMAGE_BUILDER, NODE_TESTS, host_state

pytestmark = [*NODE_TESTS, NEEDS_IMAGE_BUILDER]


def test_cluster_demo_ends_with_every_example_ready_and_the_commands_to_follow(tmp_path):
    directory = tmp_path / "demo"
    before = host_state()
    try:
        done = subprocess.run([sys.executable, "-m", "instance_profile_operator.devenv.clusterdemo", "--dir", str(directory)],
                              capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
        tail = done.stdout.rsplit("The operator runs in two pods", 1)[1]
        assert "every example binding is Ready" in tail
        assert f"env --dir {directory}" in tail and f"down --dir {directory}" in tail and "kubectl get ipb -A" in tail
    finally:
        devenv_cli("down", "--dir", str(directory))
    assert host_state() == before
