"""The chart's Grafana dashboard: every PromQL expression parses with Prometheus' own parser, and
every metric it names is served by a running operator."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import yaml

from instance_profile_operator.devenv import gotools

from ..support.kube import REPO, Bindings, manifest
from ..support.waiting import wait_for

DASHBOARD = REPO / "deploy" / "helm" / "instance-profile-operator" / "files" / "dashboard.json"
PANELS = ("Bindings by Ready reason", "Stalled bindings by reason", "Reconcile rate by result", "Reconcile errors",
          "Reconcile latency", "Work queue depth and work in process", "Work queue latency",
          "EC2 calls by operation and outcome", "EC2 throttling ratio", "EC2 latency by operation", "Leader by pod",
          "Memory (RSS)", "CPU")


def panels() -> list[dict]:
    return [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]


def as_rules(path: Path) -> Path:
    """The expressions as Grafana sends them to Prometheus ($__rate_interval substituted), in a rule file."""
    rules = [{"record": f"panel_{panel['id']}_{target['refId']}", "expr": target["expr"].replace("$__rate_interval", "1m")}
             for panel in panels() for target in panel["targets"]]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


def served(port: int) -> set[str]:
    """Every series name /metrics serves or declares: a family without a sample yet (say, failures
    of an account no resync has failed) is served all the same, by its # TYPE line."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    names = {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
    return names


def test_the_dashboard_has_the_panels_of_the_first_hour():
    assert set(PANELS) <= {panel["title"] for panel in panels()}
    assert all(panel["targets"] for panel in panels())


def test_every_expression_parses_and_names_only_served_metrics(start_operator, bindings: Bindings, new_instance, tmp_path):
    check = subprocess.run([str(gotools.ensure_built(gotools.PROMQL_CHECK)), "-metrics", str(as_rules(tmp_path / "d.yaml"))],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    named = {line.split()[1] for line in check.stdout.splitlines() if line.startswith("metric ")}
    assert len(named) >= 15, named
    operator = start_operator()
    bindings.create(manifest("shown", new_instance()))
    wait_for(lambda: bindings.is_ready("shown"), what="a binding Ready (EC2 calls made)")
    missing = named - served(operator.metrics_port)
    assert not missing, f"named by the dashboard, not served: {sorted(missing)}"
