"""Fleet benchmark of InstanceProfileBindingSet, behind the EC2 throttling emulator
(bench/ec2_throttle.py): one set selecting N tagged instances.

* create: set applied → every child Ready, against the Associate floor (N − burst) / rate;
* launch: an instance launched with the set's tags → its child Ready, against resync + 5 s;
* steady: DescribeInstances and association Describes per resync interval, against
  ⌈N/1000⌉ and ⌈N/200⌉; the operator's RSS;
* profile: the set's profile changed → every child Ready again, against the Replace floor.

    python bench/sets.py [--instances 1000] [--resync-seconds 20] [--steady-resyncs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.converge import install_crds, machine, metrics  # noqa: E402
from bench.ec2_throttle import EC2_BUCKETS, ThrottleEmulator  # noqa: E402
from bench.fleet import rss_mib  # noqa: E402
from instance_profile_operator.core.api import GROUP, SET_PLURAL, VERSION  # noqa: E402
from instance_profile_operator.devenv.cluster import DevEnv, _die_with_parent, free_port, wait_until  # noqa: E402

NAMESPACE, SET, ACCESS_KEY, TAG = "fleet", "web", "AKIASETS", {"Key": "role", "Value": "web"}
DESCRIBES = ("DescribeInstances", "DescribeIamInstanceProfileAssociations")


def launch(ec2, n: int, per_reservation: int = 1000) -> list[str]:
    """``n`` tagged instances in reservations of ``per_reservation`` (moto pages DescribeInstances
    by reservation: 1 per reservation makes its pages hold 1,000 instances, as EC2's do)."""
    def reservation(size: int) -> list[str]:
        return [i["InstanceId"] for i in ec2.run_instances(
            ImageId="ami-0abcdef1234567890", MinCount=size, MaxCount=size,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [TAG]}])["Instances"]]
    sizes = [min(per_reservation, n - start) for start in range(0, n, per_reservation)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return [instance for ids in pool.map(reservation, sizes) for instance in ids]


def scaled_buckets(scale: float) -> dict[str, tuple[float, float]]:
    """EC2's buckets, each burst and rate times ``scale`` (1: EC2's own)."""
    return {action: (burst * scale, rate * scale) for action, (burst, rate) in EC2_BUCKETS.items()}


def floor(action: str, n: int, scale: float = 1.0) -> float:
    burst, rate = scaled_buckets(scale)[action]
    return max(n - burst, 0) / rate


def ratio(took: float, goal: float) -> float | None:
    return round(took / goal, 3) if goal else None  # within the burst there is no floor


class SetReader:
    def __init__(self, api):
        self.api = api

    def status(self) -> dict:
        body = self.api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, SET_PLURAL, SET)
        status = body.get("status") or {}
        return {**status, "current": status.get("observedGeneration") == body["metadata"]["generation"]}

    def all_ready(self, n: int) -> bool:
        status = self.status()
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        return status["current"] and status.get("selected") == n and status.get("ready") == n and ready.get("status") == "True"


def sent(emulator: ThrottleEmulator, before: dict) -> tuple[dict, dict]:
    after = emulator.counts()
    return ({a: after["requests"].get(a, 0) - before["requests"].get(a, 0) for a in after["requests"]},
            {a: r for a in after["refused"] if (r := after["refused"].get(a, 0) - before["refused"].get(a, 0))})


class Timeline:
    """Where a scenario's time goes: a sample every half second of the mutating calls EC2 granted,
    read as the first and last call, the rate after the burst against the bucket's, and the tail
    from the last call to all Ready."""

    def __init__(self, emulator: ThrottleEmulator, action: str):
        self.emulator, self.action = emulator, action
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> "Timeline":
        self.base = self._calls()
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _calls(self) -> int:
        counts = self.emulator.counts()
        return counts["requests"].get(self.action, 0) - counts["refused"].get(self.action, 0)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            at, calls = time.monotonic() - self.started, self._calls()  # the set's status may be slow to read
            self.samples.append((at, calls))

    def summary(self, ended: float) -> dict:
        if not self.samples:
            return {}
        calls = [(0.0, 0)] + [(t, c - self.base) for t, c in self.samples]
        moved = [t for (t, c), (_, previous) in zip(calls[1:], calls) if c > previous]
        if not moved:
            return {}
        burst, rate = self.emulator.limits[self.action]
        first, last = moved[0], moved[-1]
        after_burst = next(((t, c) for t, c in calls if c >= burst), None)  # the bucket paces from here
        paced_rate = None
        if after_burst is not None and last > after_burst[0]:
            paced_rate = round((calls[-1][1] - after_burst[1]) / (last - after_burst[0]), 2)
        return {"first_call_s": round(first, 1), "last_call_s": round(last, 1), "calls": calls[-1][1],
                "paced_rate_per_s": paced_rate, "bucket_rate_per_s": rate,
                "tail_to_all_ready_s": round(ended - last, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--resync-seconds", type=float, default=20.0)
    parser.add_argument("--steady-resyncs", type=int, default=3)
    parser.add_argument("--scenarios", default="create,launch,steady,profile")
    parser.add_argument("--operator-log", help="keep the operator's log at this path")
    parser.add_argument("--instances-per-reservation", type=int, default=1000,
                        help="1 makes moto's DescribeInstances pages hold 1,000 instances, as EC2's do (launching is slower)")
    parser.add_argument("--bucket-scale", type=float, default=1.0,
                        help="EC2's buckets (emulator and operator alike) times this: a 10,000-instance run's steady "
                             "state and RSS without 33 minutes of Associates; floors are the scaled ones")
    args = parser.parse_args()
    n = args.instances
    results: dict = {"machine": machine(), "instances": n, "resync_seconds": args.resync_seconds,
                     "bucket_scale": args.bucket_scale}
    with tempfile.TemporaryDirectory(prefix="ipo-sets-") as temporary:
        workdir = Path(temporary)
        env = DevEnv(workdir / "devenv")
        endpoints = env.start()
        try:
            install_crds(endpoints)
            subprocess.run([f"{endpoints.bin_dir}/kubectl", f"--kubeconfig={endpoints.kubeconfig}", "wait",
                            "--for=condition=Established", "crd/instanceprofilebindingsets.ec2.instanceprofiles.dev"],
                           check=True, capture_output=True)
            session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=endpoints.region)
            iam = session.client("iam", endpoint_url=endpoints.ec2_endpoint_url)
            for profile in ("web-server", "batch-worker"):
                iam.create_instance_profile(InstanceProfileName=profile)
            ec2 = session.client("ec2", endpoint_url=endpoints.ec2_endpoint_url)
            launch(ec2, n, args.instances_per_reservation)
            api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(config_file=endpoints.kubeconfig))
            kubernetes.client.CoreV1Api(api.api_client).create_namespace({"metadata": {"name": NAMESPACE}})
            emulator = ThrottleEmulator(endpoints.ec2_endpoint_url, scaled_buckets(args.bucket_scale)).start()
            port = free_port()
            environment = {**os.environ, **endpoints.aws_variables(), "AWS_ENDPOINT_URL": emulator.url,
                           "AWS_ACCESS_KEY_ID": ACCESS_KEY, "KUBECONFIG": endpoints.kubeconfig}
            log = open(workdir / "operator.log", "wb")
            operator = subprocess.Popen(
                [sys.executable, "-m", "instance_profile_operator.cli", "run", "--namespace", NAMESPACE,
                 "--policy-enforcement", "Disabled", "--resync-seconds", str(args.resync_seconds),
                 "--metrics-address", f"127.0.0.1:{port}",
                 *(f"--ec2-rate-limit={action}={burst:g}:{rate:g}" for action, (burst, rate) in emulator.limits.items()
                   if args.bucket_scale != 1.0)],
                env=environment, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            reader = SetReader(api)
            try:
                wait_until(lambda: metrics(port) is not None, 60, "the operator", {"operator": operator})
                scenarios = args.scenarios.split(",")
                before = emulator.counts()
                timeline = Timeline(emulator, "AssociateIamInstanceProfile").start()
                started = time.monotonic()
                api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, SET_PLURAL, {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfileBindingSet", "metadata": {"name": SET},
                    "spec": {"instanceSelector": {"tags": {TAG["Key"]: TAG["Value"]}},
                             "iamInstanceProfile": {"name": "web-server"}}})
                wait_until(lambda: reader.all_ready(n), 3600, "every child Ready")
                took = time.monotonic() - started
                timeline.stop()
                requests, refused = sent(emulator, before)
                goal = floor("AssociateIamInstanceProfile", n, args.bucket_scale)
                results["create"] = {"apply_to_all_ready_s": round(took, 1), "floor_s": goal, "over_floor": ratio(took, goal),
                                     "goal": "<= 1.05x floor, 0 refused", "requests": requests, "refused": refused,
                                     "timeline": timeline.summary(took), "load_average": os.getloadavg()}
                print(json.dumps({"create": results["create"]}), flush=True)
                selected = n
                if "launch" in scenarios:
                    started = time.monotonic()
                    launch(ec2, 1)
                    selected += 1
                    wait_until(lambda: reader.all_ready(selected), 600, "the launched instance's child Ready")
                    took = time.monotonic() - started
                    results["launch"] = {"launch_to_child_ready_s": round(took, 1),
                                         "goal_s": args.resync_seconds + 5, "met": took <= args.resync_seconds + 5}
                    print(json.dumps({"launch": results["launch"]}), flush=True)
                if "steady" in scenarios:
                    time.sleep(args.resync_seconds)  # a measuring window, not synchronisation: let the last writes settle
                    before = emulator.counts()
                    window = args.steady_resyncs * args.resync_seconds
                    time.sleep(window)
                    requests, refused = sent(emulator, before)
                    per_resync = {a: round(requests.get(a, 0) / args.steady_resyncs, 2) for a in DESCRIBES}
                    results["steady"] = {
                        "per_resync": per_resync, "other_requests": {a: c for a, c in requests.items() if a not in DESCRIBES and c},
                        "goal_per_resync": {"DescribeInstances": math.ceil(selected / 1000),
                                            "DescribeIamInstanceProfileAssociations": math.ceil(selected / 200)},
                        "rss_mib": round(rss_mib(operator.pid), 1), "rss_peak_mib": round(rss_mib(operator.pid, "VmHWM"), 1)}
                    print(json.dumps({"steady": results["steady"]}), flush=True)
                if "profile" in scenarios:
                    before = emulator.counts()
                    timeline = Timeline(emulator, "ReplaceIamInstanceProfileAssociation").start()
                    started = time.monotonic()
                    api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, SET_PLURAL, SET,
                                                       {"spec": {"iamInstanceProfile": {"name": "batch-worker"}}})
                    wait_until(lambda: reader.all_ready(selected), 3600, "every child Ready on the new profile")
                    took = time.monotonic() - started
                    timeline.stop()
                    requests, refused = sent(emulator, before)
                    goal = floor("ReplaceIamInstanceProfileAssociation", selected, args.bucket_scale)
                    results["profile"] = {"patch_to_all_ready_s": round(took, 1), "floor_s": goal,
                                          "over_floor": ratio(took, goal), "goal": "<= 1.05x floor",
                                          "requests": requests, "refused": refused, "timeline": timeline.summary(took), "load_average": os.getloadavg()}
                    print(json.dumps({"profile": results["profile"]}), flush=True)
            finally:
                operator.terminate()
                operator.wait(30)
                log.close()
                if args.operator_log:
                    Path(args.operator_log).write_bytes((workdir / "operator.log").read_bytes())
                emulator.stop()
            print(json.dumps(results, indent=2))
        finally:
            env.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
