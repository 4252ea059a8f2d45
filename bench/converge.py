"""Convergence benchmark on the development environment.

Measures, with the operator running as a subprocess against a fresh local control plane and
moto endpoint:

* apply → Ready for one binding (repeated) and for N bindings created at once;
* EC2 API calls per binding during convergence, and per resync at steady state
  (the operator's own /metrics counters);
* status PATCH requests per binding, and every other write the operator makes, read from the
  API server's audit log (the ground truth, kopf's own patches included).

    python bench/converge.py [--bindings 100] [--single-runs 5] [--resync-seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import kubernetes

from instance_profile_operator.core.api import GROUP, PLURAL, VERSION
from instance_profile_operator.devenv.cluster import DevEnv, _die_with_parent, free_port, wait_until

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def metrics(port: int) -> Counter:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return Counter({name: float(value) for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")})


def ec2_requests(samples: Counter) -> Counter:
    """EC2 requests per operation, all outcomes summed."""
    calls: Counter = Counter()
    for key, value in samples.items():
        if key.startswith("ipo_ec2_requests_total{"):
            calls[key.split('"')[1]] += value  # operation is the first label
    return calls


def audit_writes(path: Path, since_line: int) -> tuple[Counter, int]:
    """Write requests on bindings and Events by user, from ``since_line`` on."""
    lines = path.read_text().splitlines()
    writes: Counter = Counter()
    for line in lines[since_line:]:
        entry = json.loads(line)
        if entry.get("stage") != "ResponseComplete" or entry["verb"] not in ("create", "patch", "update"):
            continue
        ref = entry.get("objectRef", {})
        writes[f"{entry['verb']} {ref.get('resource')}{'/' + ref['subresource'] if ref.get('subresource') else ''}"] += 1
    return writes, len(lines)


def install_crds(endpoints) -> None:
    """Apply crds/ and wait until both CRDs are Established."""
    kubectl = [f"{endpoints.bin_dir}/kubectl", f"--kubeconfig={endpoints.kubeconfig}"]
    subprocess.run([*kubectl, "apply", "-f", str(REPO / "crds")], check=True, capture_output=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd/instanceprofilebindings.ec2.instanceprofiles.dev",
                    "crd/instanceprofilepolicies.ec2.instanceprofiles.dev"], check=True, capture_output=True)


def ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions") or [])


def body(name: str, instance_id: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfileBinding", "metadata": {"name": name},
            "spec": {"instanceId": instance_id, "iamInstanceProfile": {"name": "web-server"}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=100)
    parser.add_argument("--single-runs", type=int, default=5)
    parser.add_argument("--resync-seconds", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ipo-bench-") as temporary:
        env = DevEnv(Path(temporary))
        endpoints = env.start()
        operator = None
        try:
            install_crds(endpoints)
            session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=endpoints.region)
            session.client("iam", endpoint_url=endpoints.ec2_endpoint_url).create_instance_profile(InstanceProfileName="web-server")
            ec2 = session.client("ec2", endpoint_url=endpoints.ec2_endpoint_url)
            total = args.bindings + args.single_runs
            launched = ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=total, MaxCount=total)
            instances = [i["InstanceId"] for i in launched["Instances"]]

            port = free_port()
            log = open(Path(temporary) / "operator.log", "wb")
            operator = subprocess.Popen(
                [sys.executable, "-m", "instance_profile_operator.cli", "run", "--all-namespaces",
                 "--policy-enforcement", "Disabled",  # convergence, not tenancy, is measured here
                 "--resync-seconds", str(args.resync_seconds), "--metrics-address", f"127.0.0.1:{port}"],
                env={**os.environ, **endpoints.aws_variables(), "KUBECONFIG": endpoints.kubeconfig},
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )
            wait_until(lambda: metrics(port) is not None, 30, "the operator", {"operator": operator})
            api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(config_file=endpoints.kubeconfig))
            audit = Path(endpoints.audit_log)

            # -- one binding at a time --------------------------------------------------
            singles = []
            for n in range(args.single_runs):
                started = time.monotonic()
                api.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body(f"single-{n}", instances[args.bindings + n]))
                wait_until(lambda: ready(api.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, f"single-{n}")), 30, "Ready")
                singles.append(time.monotonic() - started)

            # -- N at once ----------------------------------------------------------------
            wait_until(lambda: audit.exists() and audit.stat().st_size > 0, 10, "the audit log")
            time.sleep(1.5)  # let the audit batch of the single runs flush (1 s batches) before we mark the log
            _, mark = audit_writes(audit, 0)
            before = metrics(port)
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: api.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body(f"many-{n}", instances[n])),
                              range(args.bindings)))
            created = time.monotonic() - started

            def all_ready() -> bool:
                items = api.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"]
                return sum(ready(i) for i in items if i["metadata"]["name"].startswith("many-")) == args.bindings

            wait_until(all_ready, 120, "all bindings Ready")
            converged = time.monotonic() - started
            # settle: wait for follow-up writes, then read the counters
            time.sleep(2.0)
            after = metrics(port)
            writes, mark = audit_writes(audit, mark)
            ec2_calls = ec2_requests(after) - ec2_requests(before)

            # -- steady state -------------------------------------------------------------
            start_resyncs = after["ipo_resyncs_total"]
            wait_until(lambda: metrics(port)["ipo_resyncs_total"] >= start_resyncs + 3, args.resync_seconds * 5, "three resyncs")
            steady = metrics(port)
            time.sleep(1.5)
            steady_writes, _ = audit_writes(audit, mark)
            resyncs = steady["ipo_resyncs_total"] - start_resyncs
            steady_calls = {op: n / resyncs for op, n in (ec2_requests(steady) - ec2_requests(after)).items()}

            # -- deletion -----------------------------------------------------------------
            def gone(name: str) -> bool:
                try:
                    api.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)
                    return False
                except kubernetes.client.exceptions.ApiException as error:
                    return error.status == 404

            deletions = []
            for n in range(args.single_runs):
                started = time.monotonic()
                api.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, f"single-{n}")
                wait_until(lambda: gone(f"single-{n}"), 30, "deleted")
                deletions.append(time.monotonic() - started)
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: api.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, f"many-{n}"), range(args.bindings)))
            wait_until(lambda: not api.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"], 120, "all deleted")
            batch_deleted = time.monotonic() - started
            left = ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]

            n = args.bindings
            result = {
                "machine": machine(),
                "bindings": n,
                "single_apply_to_ready_s": {"median": round(statistics.median(singles), 3), "runs": [round(s, 3) for s in singles]},
                "batch_create_s": round(created, 3),
                "batch_apply_to_all_ready_s": round(converged, 3),
                "ec2_calls_per_binding_converging": {k: round(v / n, 3) for k, v in sorted(ec2_calls.items()) if v},
                "ec2_calls_per_resync_steady": {k: round(v, 2) for k, v in sorted(steady_calls.items())},
                "api_writes_per_binding_converging": {k: round(v / n, 3) for k, v in sorted(writes.items())},
                "api_writes_steady_state": dict(steady_writes),
                "bindings_at_steady_state": n + args.single_runs,
                "single_delete_to_gone_s": {"median": round(statistics.median(deletions), 3), "runs": [round(d, 3) for d in deletions]},
                "batch_delete_to_all_gone_s": round(batch_deleted, 3),
                "associations_left_after_deletion": len(left),
            }
            print(json.dumps(result, indent=2))
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(20)
            env.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
