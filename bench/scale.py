"""Scale benchmark under EC2's request limits: N new bindings at once, behind the throttling
emulator (bench/ec2_throttle.py), alone and with a neighbour using 40 % of the Associate budget.

Reports the time from the first create to all Ready against the floor EC2's bucket allows,
(N − burst) / rate, and the requests EC2 (the emulator) refused.

    python bench/scale.py [--bindings 300] [--resync-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.converge import audit_writes, body, install_crds, machine, metrics, ready  # noqa: E402
from bench.ec2_throttle import EC2_BUCKETS, ThrottleEmulator  # noqa: E402
from instance_profile_operator.core.api import GROUP, PLURAL, VERSION  # noqa: E402
from instance_profile_operator.devenv.cluster import DevEnv, _die_with_parent, free_port, wait_until  # noqa: E402

ASSOCIATE = "AssociateIamInstanceProfile"


def scenario(name: str, endpoints, emulator: ThrottleEmulator, api, ec2, n: int, args, workdir: Path,
             access_key: str, neighbour_share: float, operator_flags: list[str]) -> dict:
    """A fresh namespace, fresh instances, a fresh EC2 account (access key): N bindings at once."""
    kubernetes.client.CoreV1Api(api.api_client).create_namespace({"metadata": {"name": name}})
    instances = [i["InstanceId"] for i in ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=n, MaxCount=n)["Instances"]]
    if neighbour_share:
        emulator.add_neighbour(access_key, endpoints.region, ASSOCIATE, neighbour_share)
    port = free_port()
    env = {**os.environ, **endpoints.aws_variables(), "AWS_ENDPOINT_URL": emulator.url, "AWS_ACCESS_KEY_ID": access_key,
           "KUBECONFIG": endpoints.kubeconfig}
    with open(workdir / f"operator-{name}.log", "wb") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "instance_profile_operator.cli", "run", "--namespace", name, "--policy-enforcement", "Disabled",
             "--resync-seconds", str(args.resync_seconds), "--metrics-address", f"127.0.0.1:{port}", *operator_flags],
            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    try:
        wait_until(lambda: metrics(port) is not None, 30, "the operator", {"operator": operator})
        audit = Path(endpoints.audit_log)
        time.sleep(1.5)  # the audit log is written in 1 s batches: mark it once earlier writes are in
        _, mark = audit_writes(audit, 0)
        before = emulator.counts()
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: api.create_namespaced_custom_object(GROUP, VERSION, name, PLURAL, body(f"b-{i}", instances[i])), range(n)))
        created = time.monotonic() - started

        def all_ready() -> bool:
            return sum(ready(i) for i in api.list_namespaced_custom_object(GROUP, VERSION, name, PLURAL)["items"]) == n

        wait_until(all_ready, 3600, "all bindings Ready")
        converged = time.monotonic() - started
        after = emulator.counts()
        time.sleep(2.5)  # follow-up writes, and the audit batch that holds them
        writes, _ = audit_writes(audit, mark)
    finally:
        operator.terminate()
        operator.wait(20)
    burst, rate = EC2_BUCKETS[ASSOCIATE]
    left = rate * (1 - neighbour_share)
    floor = (n - burst) / left
    sent = {a: after["requests"].get(a, 0) - before["requests"].get(a, 0) for a in after["requests"]}
    refused = {a: after["refused"].get(a, 0) - before["refused"].get(a, 0) for a in after["refused"]}
    total_sent, total_refused = sum(sent.values()), sum(refused.values())
    return {
        "bindings": n, "neighbour_share_of_associate": neighbour_share, "operator_flags": operator_flags,
        "create_s": round(created, 2), "apply_to_all_ready_s": round(converged, 2),
        "floor_s": round(floor, 2), "over_floor": round(converged / floor, 3),
        "requests": sent, "refused": {a: r for a, r in refused.items() if r},
        "refused_share": round(total_refused / total_sent, 4) if total_sent else 0.0,
        "neighbour_associates": after["neighbour_requests"].get(ASSOCIATE, 0),
        "api_writes_per_binding": {k: round(v / n, 3) for k, v in sorted(writes.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=300)
    parser.add_argument("--resync-seconds", type=float, default=60.0)
    parser.add_argument("--scenarios", default="alone,neighbour", help="comma-separated: alone, neighbour")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ipo-scale-") as temporary:
        workdir = Path(temporary)
        env = DevEnv(workdir / "devenv")
        endpoints = env.start()
        try:
            install_crds(endpoints)
            session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=endpoints.region)
            session.client("iam", endpoint_url=endpoints.ec2_endpoint_url).create_instance_profile(InstanceProfileName="web-server")
            ec2 = session.client("ec2", endpoint_url=endpoints.ec2_endpoint_url)
            ec2.describe_instances()  # moto loads its catalogues on the first call
            api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(config_file=endpoints.kubeconfig))
            emulator = ThrottleEmulator(endpoints.ec2_endpoint_url).start()
            scenarios = {
                "alone": lambda: scenario("alone", endpoints, emulator, api, ec2, args.bindings, args, workdir, "AKIAALONE", 0.0, []),
                "neighbour": lambda: scenario("neighbour", endpoints, emulator, api, ec2, args.bindings, args, workdir,
                                              "AKIANEIGHBOURED", 0.4, ["--ec2-rate-limit", f"{ASSOCIATE}=100:3"]),
            }
            results = {"machine": machine()}
            try:
                for name in args.scenarios.split(","):
                    results[name] = scenarios[name]()
                    print(json.dumps({name: results[name]}), flush=True)
            finally:
                emulator.stop()
            print(json.dumps(results, indent=2))
        finally:
            env.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
