"""The README's main job: one command, bindings turn Ready, Ctrl-C stops everything."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from instance_profile_operator.devenv.demo import ALL_READY

from ..integration.test_devenv import alive
from ..support.waiting import wait_for


def descendants(pid: int) -> set[int]:
    children = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    tree, found = {}, set()
    for line in filter(None, (l.strip() for l in children)):
        child, parent = map(int, line.split())
        tree.setdefault(parent, []).append(child)
    stack = [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def test_demo_turns_the_examples_ready_and_ctrl_c_stops_everything(tmp_path):
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        # started as a non-interactive shell's background job starts it (`make test &`): SIGINT ignored
        demo = subprocess.Popen([sys.executable, "-m", "instance_profile_operator.devenv", "demo", "--dir", str(tmp_path / "env")],
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for(lambda: "Ctrl-C here stops" in log.read_text(errors="replace") or demo.poll() is not None, 120, "the demo to report Ready")
        text = log.read_text(errors="replace")
        assert ALL_READY in text, text[-3000:]
        table = text[text.index(ALL_READY):]
        for name in ("web-1", "web-2", "batch-1"):
            assert any(line.split()[1:2] == [name] and " True " in line for line in table.splitlines()), table
        # the last thing printed: what to paste into another terminal, with paths that exist
        commands = [line.strip() for line in table[table.index("another terminal"):].splitlines()[1:4]]
        exports = dict(part.split("=", 1) for part in commands[0].removeprefix("export ").split())
        assert Path(exports["KUBECONFIG"]).is_file() and Path(exports["PATH"].split(":")[0], "kubectl").is_file(), commands
        assert commands[1].startswith("source ") and Path(commands[1].split()[1]).is_file(), commands
        assert commands[2] == "kubectl get ipb -A -w"
        children = descendants(demo.pid)
        assert len(children) >= 4  # etcd, kube-apiserver, moto, the operator
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert demo.wait(60) == 0
        wait_for(lambda: not any(alive(pid) for pid in children), 15, "every child to exit")
        assert "Stopped." in log.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
