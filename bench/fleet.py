"""Fleet benchmark: an operator with N bindings (default 10,000), all Ready, behind the EC2
throttling emulator (bench/ec2_throttle.py). One run of each scenario:

* RSS with no binding, and with N bindings adopted (associations made beforehand, straight in
  moto): the cost per binding;
* steady state: Describe calls per resync, per account and region;
* a user's new binding applied while a resync re-checks the N others, against the same on an
  idle operator (apply → Ready): applied when the resync's first Describe reaches EC2
  ("describing") and when its N re-checks have just been queued ("queued"); the reconciles of
  other bindings that ran meanwhile show that the resync was under way;
* restart with nothing changed: time until every binding has been reconciled again, mutating
  EC2 calls, status writes (operator counters and the API server's audit log);
* restart with 10 associations removed and one binding created while the operator was down:
  time until all are back, and until the new binding is Ready;
* failover between two replicas (leader election): a warm standby (it knows every binding
  before it leads), the leader SIGKILLed, then 10 associations removed and one binding created
  while the Lease expires: time from the standby taking the Lease until the new binding is Ready
  and the 10 are back; then the same after a SIGTERM (the Lease released);
* peak RSS (VmHWM) of every operator process, and each goal of issue 18 against its figure.

    python bench/fleet.py [--bindings 10000] [--resync-seconds 60] [--restarts-only] [--skip-failover]

With ``--profile``, the operator runs under tracemalloc (bench/memprofile.py) from the idle
measurement on, and the largest allocation sites at N bindings are printed instead of the
timings (tracing slows the operator down).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
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

from bench.converge import audit_writes, body, ec2_requests, install_crds, machine, metrics, ready  # noqa: E402
from bench.ec2_throttle import ThrottleEmulator  # noqa: E402
from instance_profile_operator.core.api import GROUP, PLURAL, VERSION  # noqa: E402
from instance_profile_operator.devenv.cluster import DevEnv, _die_with_parent, free_port, wait_until  # noqa: E402

NAMESPACE = "fleet"
ACCESS_KEY = "AKIAFLEET"
IDLE_RUNS = 3  # a user's binding applied on an idle operator, then once per trigger during resyncs
TRIGGERS = ("describing", "queued") * 2
USER_BINDINGS = IDLE_RUNS + len(TRIGGERS)
FAILOVERS = ("killed", "stopped")  # SIGKILL (the Lease expires), then SIGTERM (the Lease released)
EXTRA_INSTANCES = USER_BINDINGS + 1 + len(FAILOVERS)  # and one per binding created while no replica leads
LEADING = 'leader_election_master_status{name="instance-profile-operator"}'
GOALS = {  # issue 18
    "warm_takeover_new_binding_ready_s": 5.0, "restart_repaired_s": 15.0, "adoption_after_creation_ended_s": 60.0,
    "api_writes_per_adopted_binding": 2.0, "rss_peak_mib": 200 / 1.048576,  # 200 MB
}
DEPTH = 'workqueue_depth{name="instanceprofilebinding"}'
MUTATIONS = ("associate_iam_instance_profile", "replace_iam_instance_profile_association", "disassociate_iam_instance_profile")
REPO = Path(__file__).resolve().parents[1]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now, or its peak so far with ``field="VmHWM"``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def total(samples, name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


class Operator:
    """The operator as a subprocess, against the emulator, watching one namespace."""

    def __init__(self, endpoints, emulator: ThrottleEmulator, args, workdir: Path, name: str = "operator", elected: bool = False):
        self.endpoints, self.emulator, self.args, self.workdir, self.name = endpoints, emulator, args, workdir, name
        self.elected = elected  # one of several replicas: leader election on, its Lease in NAMESPACE
        self.logs = Path(args.logs) if args.logs else workdir
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.runs = 0

    def start(self) -> float:
        """Start it; return seconds until /metrics answers."""
        self.port, self.runs = free_port(), self.runs + 1
        env = {**os.environ, **self.endpoints.aws_variables(), "AWS_ENDPOINT_URL": self.emulator.url,
               "AWS_ACCESS_KEY_ID": ACCESS_KEY, "KUBECONFIG": self.endpoints.kubeconfig,
               **({"IPO_LEADER_ELECT": "true", "IPO_LEADER_ELECTION_NAMESPACE": NAMESPACE} if self.elected else {})}
        command = [sys.executable, "-m", "instance_profile_operator.cli"]
        if self.args.profile:
            command = [sys.executable, str(REPO / "bench" / "memprofile.py"), str(self.workdir / "tracemalloc.txt")]
        started = time.monotonic()
        with open(self.logs / f"{self.name}-{self.runs}.log", "wb") as log:
            self.process = subprocess.Popen(
                [*command, "run", "--namespace", NAMESPACE, "--policy-enforcement", "Disabled",
                 "--resync-seconds", str(self.args.resync_seconds), "--metrics-address", f"127.0.0.1:{self.port}"],
                env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        wait_until(lambda: metrics(self.port) is not None, 300, "the operator", {"operator": self.process})
        return time.monotonic() - started

    def metrics(self):
        return metrics(self.port)

    def rss(self, field: str = "VmRSS") -> float:
        assert self.process is not None
        return rss_mib(self.process.pid, field)

    def leading(self) -> bool:
        return (self.metrics() or {}).get(LEADING) == 1

    def stop(self, kill: bool = False) -> None:
        if self.process is not None:
            self.process.kill() if kill else self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def goals(results: dict) -> dict:
    """Each goal of issue 18: its figure, its bound, and whether it was met."""
    figures = {
        "warm_takeover_new_binding_ready_s": results.get("failover_killed", {}).get("lease_to_new_binding_ready_s"),
        "restart_repaired_s": results.get("restart_10_removed_1_created", {}).get("repaired_s"),
        "adoption_after_creation_ended_s": results.get("adopt", {}).get("after_creation_ended_s"),
        "api_writes_per_adopted_binding": results.get("adopt", {}).get("operator_writes_per_binding"),
        "rss_peak_mib": max(results.get("rss_peak_mib_by_phase", {}).values(), default=None),
    }
    return {goal: {"figure": figure, "goal": round(GOALS[goal], 1), "met": figure is not None and figure <= GOALS[goal]}
            for goal, figure in figures.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=10000)
    parser.add_argument("--resync-seconds", type=float, default=60.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rss-only", action="store_true", help="stop after the steady-state resync and RSS")
    parser.add_argument("--restarts-only", action="store_true", help="skip the user's bindings during resyncs")
    parser.add_argument("--skip-failover", action="store_true", help="skip the two-replica failover scenarios")
    parser.add_argument("--logs", help="directory for the operator's logs (default: a temporary one)")
    args = parser.parse_args()
    n = args.bindings
    results: dict = {"machine": machine(), "bindings": n, "resync_seconds": args.resync_seconds}

    def report(key: str, value) -> None:
        results[key] = value
        print(json.dumps({key: value}), flush=True)

    with tempfile.TemporaryDirectory(prefix="ipo-fleet-") as temporary:
        workdir = Path(temporary)
        env = DevEnv(workdir / "devenv")
        endpoints = env.start()
        emulator = operator = None
        try:
            install_crds(endpoints)
            session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=endpoints.region)
            session.client("iam", endpoint_url=endpoints.ec2_endpoint_url).create_instance_profile(InstanceProfileName="web-server")
            ec2 = session.client("ec2", endpoint_url=endpoints.ec2_endpoint_url)
            client = kubernetes.config.new_client_from_config(config_file=endpoints.kubeconfig)
            client.configuration.connection_pool_maxsize = 16
            api = kubernetes.client.CustomObjectsApi(client)
            kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": NAMESPACE}})
            audit = Path(endpoints.audit_log)

            started = time.monotonic()
            instances: list[str] = []
            for offset in range(0, n + EXTRA_INSTANCES, 500):
                count = min(500, n + EXTRA_INSTANCES - offset)
                instances += [i["InstanceId"] for i in ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=count, MaxCount=count)["Instances"]]
            with ThreadPoolExecutor(8) as pool:  # the fleet's associations exist before its bindings: adoption
                list(pool.map(lambda i: ec2.associate_iam_instance_profile(InstanceId=i, IamInstanceProfile={"Name": "web-server"}),
                              instances[:n]))
            report("setup_ec2_s", round(time.monotonic() - started, 1))

            emulator = ThrottleEmulator(endpoints.ec2_endpoint_url).start()
            operator = Operator(endpoints, emulator, args, workdir)
            operator.start()
            time.sleep(5)  # idle: let start-up allocations settle
            report("rss_idle_mib", round(operator.rss(), 1))
            if args.profile:
                operator.process.send_signal(signal.SIGUSR1)  # trace from now on

            # -- N bindings adopting their associations ---------------------------------------
            def count_ready() -> int:
                return sum(ready(i) for i in api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"])

            _, mark = audit_writes(audit, 0)
            started = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda k: api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body(f"b-{k}", instances[k])),
                              range(n)))
            created = time.monotonic() - started
            wait_until(lambda: count_ready() == n, 3600, "all bindings Ready")
            took = time.monotonic() - started
            writes, _ = audit_writes(audit, mark)
            report("adopt", {"create_s": round(created, 1), "apply_to_all_ready_s": round(took, 1),
                             "after_creation_ended_s": round(took - created, 1), "api_writes": dict(writes),
                             "operator_writes_per_binding": round((sum(writes.values()) - writes["create instanceprofilebindings"]) / n, 2)})
            if args.profile:
                time.sleep(10)
                operator.process.send_signal(signal.SIGUSR1)
                wait_until(lambda: (workdir / "tracemalloc.txt").exists(), 120, "the tracemalloc snapshot")
                time.sleep(2)
                print((workdir / "tracemalloc.txt").read_text())
                report("rss_at_n_mib_under_tracemalloc", round(operator.rss(), 1))
                return 0

            # -- steady state: one resync -----------------------------------------------------
            first = operator.metrics()
            wait_until(lambda: operator.metrics()["ipo_resyncs_total"] >= first["ipo_resyncs_total"] + 1, args.resync_seconds * 3, "a resync")
            wait_until(lambda: operator.metrics()[DEPTH] == 0, 600, "the resync's reconciles")
            second = operator.metrics()
            wait_until(lambda: operator.metrics()["ipo_resyncs_total"] >= second["ipo_resyncs_total"] + 1, args.resync_seconds * 3, "a resync")
            third = operator.metrics()
            calls = ec2_requests(third) - ec2_requests(second)
            report("steady_resync_ec2_calls", dict(calls))
            report("rss_at_n_mib", round(operator.rss(), 1))
            report("rss_peak_mib", round(operator.rss("VmHWM"), 1))  # the adoption burst's, as a rule
            peaks = {"adoption_and_steady": results["rss_peak_mib"]}
            report("rss_per_binding_kib", round((results["rss_at_n_mib"] - results["rss_idle_mib"]) * 1024 / n, 2))
            if args.rss_only:
                return 0

            # -- a user's binding: idle, then while a resync re-checks the N others -------
            def apply_to_ready(name: str, instance_id: str) -> tuple[float, dict]:
                """Seconds from create to Ready, and what the operator did meanwhile (its /metrics
                sampled every 20 ms from another thread: how deep the queue was, how many other
                bindings it reconciled)."""
                samples: list[tuple[float, float]] = []  # (reconciles, queue depth)
                done = threading.Event()

                def sample() -> None:
                    while not done.is_set():
                        m = operator.metrics()
                        samples.append((total(m, "controller_runtime_reconcile_total"), m[DEPTH]))
                        time.sleep(0.02)

                sampler = threading.Thread(target=sample)
                began = time.monotonic()
                sampler.start()
                api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body(name, instance_id))
                wait_until(lambda: ready(api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)), 600,
                           f"{name} Ready", interval=0.02)
                took = time.monotonic() - began
                done.set()
                sampler.join()
                return took, {"metrics_samples": len(samples), "queue_depth_max": max(d for _, d in samples),
                              "other_reconciles_meanwhile": samples[-1][0] - samples[0][0] - 1}

            def describes() -> int:
                return emulator.counts()["requests"].get("DescribeIamInstanceProfileAssociations", 0)

            def queue_depth() -> float:
                return operator.metrics()[DEPTH]

            extra = iter(instances[n:])
            wait_until(lambda: queue_depth() == 0, 600, "an idle queue")
            if not args.restarts_only:
                idle = [apply_to_ready(f"user-idle-{k}", next(extra))[0] for k in range(IDLE_RUNS)]
                during = []
                for k, trigger in enumerate(TRIGGERS):
                    wait_until(lambda: queue_depth() == 0, 600, "an idle queue")
                    resyncs = operator.metrics()["ipo_resyncs_total"]
                    if trigger == "describing":  # the resync's first Describe reached EC2: its N re-checks come next
                        seen = describes()
                        wait_until(lambda: describes() > seen, args.resync_seconds * 3, "the next resync's Describe calls", interval=0.005)
                    else:  # the resync has described every instance and queued its N re-checks
                        wait_until(lambda: operator.metrics()["ipo_resyncs_total"] > resyncs, args.resync_seconds * 3, "the next resync",
                                   interval=0.005)
                    triggered, depth = time.monotonic(), queue_depth()
                    took, meanwhile = apply_to_ready(f"user-{trigger}-{k}", next(extra))
                    wait_until(lambda: operator.metrics()["ipo_resyncs_total"] > resyncs and queue_depth() == 0, 600,
                               "the resync's re-checks")
                    during.append({"trigger": trigger, "apply_to_ready_s": round(took, 2), "queue_depth_when_applied": depth,
                                   **meanwhile, "resync_rechecks_done_after_s": round(time.monotonic() - triggered, 1)})
                idle_median = statistics.median(idle)
                report("user_binding", {"idle_apply_to_ready_s": [round(t, 2) for t in idle], "during_resync": during,
                                        "worst_ratio_to_idle_median": round(max(d["apply_to_ready_s"] for d in during) / idle_median, 2)})

            # -- restart, nothing changed ---------------------------------------------------
            live = n + (0 if args.restarts_only else USER_BINDINGS)
            operator.stop()
            time.sleep(1.5)
            _, mark = audit_writes(audit, 0)
            began = time.monotonic()
            operator.start()

            def reobserved() -> bool:
                m = operator.metrics()
                return total(m, "controller_runtime_reconcile_total") >= live and m[DEPTH] == 0

            wait_until(reobserved, 600, "every binding reconciled")
            reobserved_s = time.monotonic() - began
            peaks["restart_unchanged"] = round(operator.rss("VmHWM"), 1)
            m = operator.metrics()
            time.sleep(2.5)
            writes, _ = audit_writes(audit, mark)
            report("restart_unchanged", {
                "reobserved_s": round(reobserved_s, 1), "ec2_calls": dict(ec2_requests(m)),
                "mutating_calls": sum(ec2_requests(m)[op] for op in MUTATIONS),
                "status_patches": m["ipo_status_patches_total"], "api_writes": dict(writes)})

            # -- restart, 10 associations removed while down -------------------------------
            operator.stop()
            removed = instances[:n:max(1, n // 10)][:10]
            found = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": removed}])
            for association in found["IamInstanceProfileAssociations"]:
                ec2.disassociate_iam_instance_profile(AssociationId=association["AssociationId"])
            api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body("created-while-down", instances[-1]))
            began = time.monotonic()
            operator.start()
            wait_until(lambda: ready(api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "created-while-down")),
                       600, "the binding created while down Ready", interval=0.05)
            new_ready_s = time.monotonic() - began

            def repaired() -> bool:
                found = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": removed}])
                return len({a["InstanceId"] for a in found["IamInstanceProfileAssociations"] if a["State"] == "associated"}) == len(removed)

            wait_until(repaired, 600, "the removed associations repaired")
            report("restart_10_removed_1_created", {"repaired_s": round(time.monotonic() - began, 1), "new_ready_s": round(new_ready_s, 1),
                                          "mutating_calls": sum(ec2_requests(operator.metrics())[op] for op in MUTATIONS)})
            wait_until(lambda: queue_depth() == 0, 600, "an idle queue")
            peaks["restart_10_removed"] = round(operator.rss("VmHWM"), 1)
            live += 1

            # -- failover between two replicas: a warm standby takes over ---------------------
            if not args.skip_failover:
                operator.stop()
                replicas = [Operator(endpoints, emulator, args, workdir, name, elected=True) for name in ("replica-a", "replica-b")]
                leader, standby = replicas
                try:
                    leader.start()
                    wait_until(leader.leading, 60, "the first replica to lead")
                    wait_until(lambda: leader.metrics()[DEPTH] == 0 and total(leader.metrics(), "controller_runtime_reconcile_total") >= live,
                               600, "the leader's start-up reconciles")
                    standby.start()
                    wait_until(lambda: total(standby.metrics(), "ipo_bindings") == live, 600, "the standby to know every binding")
                    for k, how in enumerate(FAILOVERS):
                        peaks[f"standby_before_{how}"] = round(standby.rss("VmHWM"), 1)
                        removed = instances[k + 1:n:max(1, n // 10)][:10]
                        stopped = time.monotonic()
                        leader.stop(kill=how == "killed")
                        found = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": removed}])
                        for association in found["IamInstanceProfileAssociations"]:
                            ec2.disassociate_iam_instance_profile(AssociationId=association["AssociationId"])
                        name = f"created-on-standby-{how}"
                        api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body(name, instances[-2 - k]))
                        before_leading = {"ec2": 0.0}

                        def took_lease() -> bool:  # one scrape says both: the EC2 calls made while it did not lead yet
                            scraped = standby.metrics() or {}
                            if scraped.get(LEADING):
                                return True
                            if scraped:
                                before_leading["ec2"] = sum(ec2_requests(scraped).values())
                            return False
                        wait_until(took_lease, 60, "the standby to take the Lease", interval=0.02)
                        took = time.monotonic()
                        wait_until(lambda: ready(api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)), 600,
                                   f"{name} Ready", interval=0.02)
                        new_ready_s = time.monotonic() - took
                        wait_until(repaired, 600, "the removed associations repaired", interval=0.1)
                        repaired_s = time.monotonic() - took
                        live += 1
                        wait_until(lambda: standby.metrics()[DEPTH] == 0, 600, "the new leader's reconciles")
                        peaks[f"new_leader_after_{how}"] = round(standby.rss("VmHWM"), 1)
                        report(f"failover_{how}", {"stop_to_lease_taken_s": round(took - stopped, 1),
                                                   "ec2_calls_on_standby_before_leading": before_leading["ec2"],
                                                   "lease_to_new_binding_ready_s": round(new_ready_s, 2),
                                                   "lease_to_10_repaired_s": round(repaired_s, 1)})
                        leader, standby = standby, leader
                        if k + 1 < len(FAILOVERS):  # the stopped replica comes back as the standby
                            standby.start()
                            wait_until(lambda: total(standby.metrics(), "ipo_bindings") == live, 600, "the standby to know every binding")
                finally:
                    for replica in replicas:
                        replica.stop()
            report("rss_peak_mib_by_phase", peaks)
            report("emulator_refused", emulator.counts()["refused"])
            report("goals", goals(results))
        finally:
            if operator is not None:
                operator.stop()
            if emulator is not None:
                emulator.stop()
            env.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
