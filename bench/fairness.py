"""Fairness benchmark: one namespace floods the operator with profile changes, another's new
binding must not wait for the flood (issue 14, point 7).

Behind the EC2 throttling emulator (bench/ec2_throttle.py: EC2's buckets in front of moto), with
policies enforced (instance tags checked before each change, as in the issue's report):

* namespace ``flood`` has ``--flood`` bindings (default 40), all Ready; then ``--threads``
  client threads flip their profiles between two allowed ones as fast as the API server takes
  the patches, which asks for far more ReplaceIamInstanceProfileAssociation than EC2's 5 per
  second;
* namespace ``calm`` creates one new binding at a time (a fresh instance each): apply → Ready,
  ``--runs`` times on the idle operator, then ``--runs`` times during the flood, once the flood
  has the work queue and the Replace budget busy.

Reports both medians and their ratio (goal: at most 2), the same from the moment kopf's
finalizer is on (the operator's part, without the API server's), the flips made, and the EC2
requests sent and refused during the flood.

    python bench/fairness.py [--flood 40] [--runs 10] [--threads 4] [--warm-up 10]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.converge import install_crds, machine, metrics, ready  # noqa: E402
from bench.ec2_throttle import ThrottleEmulator  # noqa: E402
from instance_profile_operator.core.api import GROUP, PLURAL, POLICY_PLURAL, VERSION  # noqa: E402
from instance_profile_operator.devenv.cluster import DevEnv, _die_with_parent, free_port, wait_until  # noqa: E402

ACCESS_KEY = "AKIAFAIRNESS"
PROFILES = ("web-server", "batch-worker")
IMAGE = "ami-0abcdef1234567890"


def binding(name: str, instance_id: str, profile: str = PROFILES[0]) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfileBinding", "metadata": {"name": name},
            "spec": {"instanceId": instance_id, "iamInstanceProfile": {"name": profile}}}


def policy(team: str, profiles: tuple[str, ...]) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfilePolicy", "metadata": {"name": team},
            "spec": {"namespaceSelector": {"matchLabels": {"team": team}}, "instanceProfiles": [{"name": p} for p in profiles],
                     "instanceTags": {"team": team}}}


def launch(ec2, team: str, count: int) -> list[str]:
    tags = [{"ResourceType": "instance", "Tags": [{"Key": "team", "Value": team}]}]
    return [i["InstanceId"] for i in ec2.run_instances(ImageId=IMAGE, MinCount=count, MaxCount=count, TagSpecifications=tags)["Instances"]]


class Flood:
    """Threads flipping the profiles of ``names`` in ``namespace`` as fast as the API server allows."""

    def __init__(self, api, namespace: str, names: list[str], threads: int):
        self.api, self.namespace = api, namespace
        self.shares = [names[n::threads] for n in range(threads)]
        self.stopping = threading.Event()
        self.flips = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._flip, args=(share,), daemon=True) for share in self.shares]

    def _flip(self, names: list[str]) -> None:
        for flip in itertools.count(1):
            for name in names:
                if self.stopping.is_set():
                    return
                patch = {"spec": {"iamInstanceProfile": {"name": PROFILES[flip % 2]}}}
                self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)
                with self._lock:
                    self.flips += 1

    def start(self) -> "Flood":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(30)


def apply_to_ready(api, namespace: str, name: str, instance_id: str) -> tuple[float, float]:
    """Seconds from the create until the binding is Ready, and until kopf had put its finalizer on
    (the part that is the API server's and kopf's, before the operator's reconcile can act)."""
    started = time.monotonic()
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, binding(name, instance_id))
    finalized: list[float] = []

    def is_ready() -> bool:
        body = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        if not finalized and body["metadata"].get("finalizers"):
            finalized.append(time.monotonic() - started)
        return ready(body)

    wait_until(is_ready, 300, f"{namespace}/{name} Ready", interval=0.02)
    return time.monotonic() - started, finalized[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=40, help="bindings the flooding namespace flips")
    parser.add_argument("--runs", type=int, default=10, help="new bindings timed, idle and during the flood")
    parser.add_argument("--threads", type=int, default=4, help="client threads flipping profiles")
    parser.add_argument("--warm-up", type=float, default=10.0, help="seconds of flood before the first timed binding")
    parser.add_argument("--logs", help="directory for the operator's log (default: a temporary one)")
    args = parser.parse_args()
    results: dict = {"machine": machine(), "flood_bindings": args.flood, "flip_threads": args.threads, "runs": args.runs}

    with tempfile.TemporaryDirectory(prefix="ipo-fairness-") as temporary:
        workdir = Path(temporary)
        logs = Path(args.logs) if args.logs else workdir
        env = DevEnv(workdir / "devenv")
        endpoints = env.start()
        emulator = operator = None
        try:
            install_crds(endpoints)
            session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=endpoints.region)
            iam = session.client("iam", endpoint_url=endpoints.ec2_endpoint_url)
            for profile in PROFILES:
                iam.create_instance_profile(InstanceProfileName=profile)
            ec2 = session.client("ec2", endpoint_url=endpoints.ec2_endpoint_url)
            flood_instances, calm_instances = launch(ec2, "flood", args.flood), launch(ec2, "calm", 2 * args.runs)
            client = kubernetes.config.new_client_from_config(config_file=endpoints.kubeconfig)
            client.configuration.connection_pool_maxsize = 2 * args.threads
            api = kubernetes.client.CustomObjectsApi(client)
            for team, profiles in (("flood", PROFILES), ("calm", PROFILES[:1])):
                kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": team, "labels": {"team": team}}})
                api.create_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL, policy(team, profiles))

            emulator = ThrottleEmulator(endpoints.ec2_endpoint_url).start()
            port = free_port()
            environment = {**os.environ, **endpoints.aws_variables(), "AWS_ENDPOINT_URL": emulator.url,
                           "AWS_ACCESS_KEY_ID": ACCESS_KEY, "KUBECONFIG": endpoints.kubeconfig}
            with open(logs / "operator.log", "wb") as log:
                operator = subprocess.Popen(
                    [sys.executable, "-m", "instance_profile_operator.cli", "run", "--namespace", "flood", "--namespace", "calm",
                     "--metrics-address", f"127.0.0.1:{port}"],
                    env=environment, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            wait_until(lambda: metrics(port) is not None, 60, "the operator", {"operator": operator})

            names = [f"f-{n}" for n in range(args.flood)]
            for name, instance_id in zip(names, flood_instances):
                api.create_namespaced_custom_object(GROUP, VERSION, "flood", PLURAL, binding(name, instance_id))
            wait_until(lambda: sum(ready(i) for i in api.list_namespaced_custom_object(GROUP, VERSION, "flood", PLURAL)["items"]) == args.flood,
                       300, "the flood's bindings Ready")

            calm = iter(enumerate(calm_instances))
            idle, idle_finalized = zip(*(apply_to_ready(api, "calm", f"idle-{n}", instance_id)
                                         for n, instance_id in itertools.islice(calm, args.runs)))
            results["idle_s"] = [round(t, 2) for t in idle]
            results["idle_finalizer_s"] = [round(t, 2) for t in idle_finalized]
            print(json.dumps({"idle_s": results["idle_s"]}), flush=True)

            flood = Flood(api, "flood", names, args.threads).start()
            try:
                time.sleep(args.warm_up)  # the flood fills the queue and empties the Replace bucket first
                before, flips_before, started = emulator.counts(), flood.flips, time.monotonic()
                busy = metrics(port)
                flooded, flooded_finalized = zip(*(apply_to_ready(api, "calm", f"flooded-{n}", instance_id) for n, instance_id in calm))
                elapsed, after, flips = time.monotonic() - started, emulator.counts(), flood.flips - flips_before
            finally:
                flood.stop()
            results["flooded_s"] = [round(t, 2) for t in flooded]
            results["flooded_finalizer_s"] = [round(t, 2) for t in flooded_finalized]
            results["idle_median_s"] = round(statistics.median(idle), 2)
            results["flooded_median_s"] = round(statistics.median(flooded), 2)
            results["ratio"] = round(statistics.median(flooded) / statistics.median(idle), 2)
            results["worst_flooded_over_idle_median"] = round(max(flooded) / statistics.median(idle), 2)
            # The operator's part: from kopf's finalizer on (the API server's and kopf's share taken out).
            operators = [statistics.median(t - f for t, f in zip(times, finalized))
                         for times, finalized in ((idle, idle_finalized), (flooded, flooded_finalized))]
            results["finalizer_to_ready_median_s"] = {"idle": round(operators[0], 2), "flooded": round(operators[1], 2),
                                                      "ratio": round(operators[1] / operators[0], 2)}
            results["during_timed_runs"] = {
                "seconds": round(elapsed, 1), "flips": flips,
                "active_workers_at_start": busy.get('controller_runtime_active_workers{controller="instanceprofilebinding"}'),
                "queue_depth_at_start": busy.get('workqueue_depth{name="instanceprofilebinding"}'),
                "ec2_requests": {a: n - before["requests"].get(a, 0) for a, n in after["requests"].items()},
                "ec2_refused": {a: n - before["refused"].get(a, 0) for a, n in after["refused"].items() if n - before["refused"].get(a, 0)},
            }
            print(json.dumps(results, indent=2), flush=True)
        finally:
            if emulator is not None:
                emulator.stop()
            if operator is not None:
                operator.terminate()
                operator.wait(30)
            env.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
