"""A platform team's journey with the Helm chart on the dev node, as real `helm` and `kubectl` do it:
the image from `make image` (loaded with `devenv.image load`), the chart's defaults but for image,
region and endpoints, and the moto endpoint's test keys. One node and one release for the module;
the tests run in file order, each starting where the previous one left the release. Needs root
(CI runs as root)."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from typing import Iterator

import boto3
import pytest
import yaml

from instance_profile_operator.core.api import GROUP, VERSION
from instance_profile_operator.devenv import gotools, pki

from ..support.kube import REPO, kubectl, manifest
from ..support.waiting import wait_for
from .conftest import NEEDS_IMAGE_BUILDER, NODE_TESTS, NodeEnv, exported, load_image

pytestmark = [*NODE_TESTS, NEEDS_IMAGE_BUILDER]

CHART = REPO / "deploy" / "helm" / "instance-profile-operator"
NAMESPACE = "instance-profile-operator"
RELEASE = "ipo"
FULLNAME = "ipo-instance-profile-operator"
LEASE = "instance-profile-operator"
MUTATIONS = ("associate_iam_instance_profile", "replace_iam_instance_profile_association", "disassociate_iam_instance_profile")


def helm(env: NodeEnv, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(gotools.ensure_built(gotools.HELM)), f"--kubeconfig={env.endpoints.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=600)


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def pods(env: NodeEnv) -> list[dict]:
    listed = json.loads(kubectl(env.endpoints, "get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    return [pod for pod in listed if not pod["metadata"].get("deletionTimestamp")]


def holder(env: NodeEnv) -> str:
    """The pod holding the Lease (identities are ``hostname_uuid``), or ""."""
    lease = json.loads(kubectl(env.endpoints, "get", "lease", LEASE, "-n", NAMESPACE, "-o", "json", check=False).stdout or "{}")
    return ((lease.get("spec") or {}).get("holderIdentity") or "").split("_")[0]


def two_ready(env: NodeEnv) -> bool:
    running = pods(env)
    return len(running) == 2 and all(pod["status"]["phase"] == "Running" and ready(pod) for pod in running)


def metrics_of(env: NodeEnv, pod: str) -> str:
    return kubectl(env.endpoints, "get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}:8081/proxy/metrics").stdout


def mutating_calls(env: NodeEnv) -> int:
    """Mutating EC2 requests sent by the running pods (each pod counts its own)."""
    total = 0
    for pod in pods(env):
        for line in metrics_of(env, pod["metadata"]["name"]).splitlines():
            if line.startswith("ipo_ec2_requests_total{") and any(f'operation="{m}"' in line for m in MUTATIONS):
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def apply(env: NodeEnv, body: dict, *flags: str) -> subprocess.CompletedProcess:
    return kubectl(env.endpoints, "apply", "-n", "default", *flags, "-f", "-", input=yaml.safe_dump(body), check=False)


def binding_ready(env: NodeEnv, name: str, timeout: float = 90) -> None:
    kubectl(env.endpoints, "wait", "-n", "default", "--for=condition=Ready", f"ipb/{name}", f"--timeout={timeout:.0f}s")


@pytest.fixture(scope="module")
def ec2(node_env: NodeEnv):
    return boto3.client("ec2", endpoint_url=node_env.endpoints.ec2_endpoint_url, region_name=node_env.endpoints.region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def new_instance(ec2):
    def launch() -> str:
        return ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    return launch


def associations(ec2, instance_id: str) -> list[dict]:
    found = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [instance_id]}])
    return [a for a in found["IamInstanceProfileAssociations"] if a["State"] != "disassociated"]


@pytest.fixture(scope="module")
def release(node_env: NodeEnv) -> Iterator[list[str]]:
    """The arguments every install and upgrade repeats: image, region, endpoints, test keys."""
    repository, tag = load_image(node_env).rsplit(":", 1)
    endpoint = exported(node_env)["IPO_IN_CLUSTER_AWS_ENDPOINT_URL"]
    keys = [{"name": name, "value": "testing"} for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    yield ["--namespace", NAMESPACE, "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
           "--set", f"aws.region={node_env.endpoints.region}",
           "--set", f"aws.endpoints.ec2={endpoint}", "--set", f"aws.endpoints.sts={endpoint}",
           "--set-json", f"deployment.extraEnvVars={json.dumps(keys)}"]


def test_helm_install_runs_two_ready_replicas_one_leads_and_a_binding_goes_ready(node_env: NodeEnv, release):
    started = time.monotonic()
    done = helm(node_env, "install", RELEASE, str(CHART), "--create-namespace", *release, "--wait", "--timeout=3m")
    assert done.returncode == 0, done.stderr + kubectl(node_env.endpoints, "describe", "pods", "-n", NAMESPACE).stdout
    print(f"helm install --wait: {time.monotonic() - started:.1f} s")
    assert two_ready(node_env), pods(node_env)  # the standby is ready too: it serves /metrics (and admission)
    names = {pod["metadata"]["name"] for pod in pods(node_env)}
    assert wait_for(lambda: holder(node_env), 60, "a replica to hold the Lease") in names
    # the metrics Service answers (the API server's service proxy reaches it through its endpoints)
    metrics = kubectl(node_env.endpoints, "get", "--raw",
                      f"/api/v1/namespaces/{NAMESPACE}/services/{FULLNAME}-metrics:metrics/proxy/metrics").stdout
    assert "leader_election_master_status" in metrics
    kubectl(node_env.endpoints, "apply", "-n", "default", "-f", str(REPO / "examples" / "web-1.yaml"))
    binding_ready(node_env, "web-1")


def test_the_standby_takes_over_when_the_leader_pod_is_force_deleted(node_env: NodeEnv, ec2, new_instance):
    leader = holder(node_env)
    kubectl(node_env.endpoints, "delete", "pod", leader, "-n", NAMESPACE, "--grace-period=0", "--force")
    deleted = time.monotonic()
    instance_id = new_instance()
    assert apply(node_env, manifest("after-failover", instance_id, {"name": "web-server"})).returncode == 0
    # the standby, or the pod that replaces the deleted one if it wins the expired Lease first
    wait_for(lambda: holder(node_env) not in ("", leader), 40, "another pod to take the Lease", interval=0.2)
    takeover = time.monotonic() - deleted
    binding_ready(node_env, "after-failover", 60)
    failover = time.monotonic() - deleted
    print(f"failover: leader pod force-deleted -> Lease taken {takeover:.1f} s, new binding Ready {failover:.1f} s")
    # kubelet kills a force-deleted pod's container within 2 s, before it can release the Lease: the
    # other pod takes it once it expires (15 s) at its next attempt (every 2 s)
    assert takeover < 15 + 2 + 2 + 1
    assert len(associations(ec2, instance_id)) == 1  # no double action
    wait_for(lambda: two_ready(node_env), 120, "the Deployment back to two ready replicas")


def test_helm_upgrade_rolls_both_pods_and_sends_no_mutating_call(node_env: NodeEnv, release, ec2):
    web_1 = json.loads(kubectl(node_env.endpoints, "get", "ipb", "web-1", "-n", "default", "-o", "json").stdout)
    [association] = associations(ec2, web_1["spec"]["instanceId"])
    before = {pod["metadata"]["name"] for pod in pods(node_env)}
    done = helm(node_env, "upgrade", RELEASE, str(CHART), *release, "--set", "reconcile.defaultResyncPeriod=30",
                "--wait", "--timeout=3m")
    assert done.returncode == 0, done.stderr
    assert two_ready(node_env) and not before & {pod["metadata"]["name"] for pod in pods(node_env)}
    wait_for(lambda: holder(node_env) not in ("", *before), 60, "a new pod to hold the Lease")
    binding_ready(node_env, "web-1")
    binding_ready(node_env, "after-failover")
    assert associations(ec2, web_1["spec"]["instanceId"]) == [association]  # the same association, untouched
    assert mutating_calls(node_env) == 0  # the new pods adopted every binding as it was


def test_the_webhook_from_a_secret_with_failure_policy_fail(node_env: NodeEnv, release, new_instance, tmp_path):
    service = f"{FULLNAME}-webhook.{NAMESPACE}.svc"
    credentials = pki.generate(tmp_path / "webhook", dns_names=(service,))
    kubectl(node_env.endpoints, "create", "secret", "tls", "webhook-tls", "-n", NAMESPACE,
            f"--cert={credentials.serving_cert}", f"--key={credentials.serving_key}")
    done = helm(node_env, "upgrade", RELEASE, str(CHART), *release, "--set", "webhook.enabled=true",
                "--set", "webhook.failurePolicy=Fail", "--set", "webhook.certManager.enabled=false",
                "--set", "webhook.tls.secretName=webhook-tls",
                "--set", f"webhook.tls.caBundle={base64.b64encode(credentials.ca_cert.read_bytes()).decode()}",
                "--wait", "--timeout=3m")
    assert done.returncode == 0, done.stderr
    denied_body = manifest("denied-probe", "i-0123456789abcdef0", {"name": "not-allowed"})
    wait_for(lambda: "denied the request" in apply(node_env, denied_body, "--dry-run=server").stderr, 60,
             "the API server to reach the webhook through its Service")
    for n in range(20):
        refused = apply(node_env, manifest(f"denied-{n}", "i-0123456789abcdef0", {"name": "not-allowed"}))
        assert refused.returncode != 0 and (
            "denied by InstanceProfilePolicy: instance profile not-allowed is not allowed in namespace default") in refused.stderr
    for n in range(20):
        admitted = apply(node_env, manifest(f"allowed-{n}", new_instance(), {"name": "web-server"}))
        assert admitted.returncode == 0, admitted.stderr

    # the README's finalizer recipe, with the operator scaled to zero and the webhook failing closed,
    # on a binding the operator finalized (Ready) before it went
    binding_ready(node_env, "allowed-0")
    kubectl(node_env.endpoints, "scale", "deployment", FULLNAME, "-n", NAMESPACE, "--replicas=0")
    wait_for(lambda: not pods(node_env), 120, "no operator pod")
    kubectl(node_env.endpoints, "delete", "ipb", "allowed-0", "-n", "default", "--wait=false")
    patched = kubectl(node_env.endpoints, "patch", "ipb", "allowed-0", "-n", "default", "--type=merge",
                      "-p", '{"metadata":{"finalizers":null}}', check=False)
    assert patched.returncode == 0, patched.stderr
    wait_for(lambda: kubectl(node_env.endpoints, "get", "ipb", "allowed-0", "-n", "default", check=False).returncode != 0,
             what="the binding gone")
    kubectl(node_env.endpoints, "scale", "deployment", FULLNAME, "-n", NAMESPACE, "--replicas=2")
    wait_for(lambda: two_ready(node_env), 120, "two ready replicas again")


def test_irsa_in_the_pod_a_projected_token_and_no_static_keys(node_env: NodeEnv, release, new_instance):
    """What EKS's pod identity webhook injects; moto's STS answers AssumeRoleWithWebIdentity."""
    token_dir = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
    irsa = [{"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/instance-profile-operator"},
            {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": f"{token_dir}/token"}]
    volume = {"name": "aws-iam-token", "projected": {"sources": [{"serviceAccountToken": {
        "audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}}
    done = helm(node_env, "upgrade", RELEASE, str(CHART), *release, "--set-json", f"deployment.extraEnvVars={json.dumps(irsa)}",
                "--set-json", f"deployment.extraVolumes={json.dumps([volume])}",
                "--set-json", f"deployment.extraVolumeMounts={json.dumps([{'name': 'aws-iam-token', 'mountPath': token_dir, 'readOnly': True}])}",
                "--wait", "--timeout=3m")
    assert done.returncode == 0, done.stderr
    for pod in pods(node_env):
        env = {item["name"] for item in pod["spec"]["containers"][0].get("env") or []}
        assert "AWS_ROLE_ARN" in env and not env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    wait_for(lambda: holder(node_env) in {pod["metadata"]["name"] for pod in pods(node_env)}, 60, "a new pod to lead")
    assert apply(node_env, manifest("with-irsa", new_instance(), {"name": "web-server"})).returncode == 0
    binding_ready(node_env, "with-irsa")
    leader_metrics = metrics_of(node_env, holder(node_env))
    assert 'operation="associate_iam_instance_profile",outcome="ok"' in leader_metrics


def test_a_deleted_namespaces_bindings_follow_their_deletion_policy(node_env: NodeEnv, ec2, new_instance):
    """kube-controller-manager's namespace controller deletes the namespace's bindings; each one's
    finalizer does what its deletionPolicy says before the namespace is gone."""
    leaving = "leaving"
    kubectl(node_env.endpoints, "create", "namespace", leaving)
    policy = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfilePolicy", "metadata": {"name": "allow-leaving"},
              "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": leaving}},
                       "instanceProfiles": [{"name": "web-server"}]}}
    kubectl(node_env.endpoints, "apply", "-f", "-", input=yaml.safe_dump(policy))
    removed, kept = new_instance(), new_instance()
    for name, instance_id, deletion in (("removed", removed, "Delete"), ("kept", kept, "Retain")):
        body = yaml.safe_dump(manifest(name, instance_id, {"name": "web-server"}, deletionPolicy=deletion))
        wait_for(lambda: kubectl(node_env.endpoints, "apply", "-n", leaving, "-f", "-", input=body, check=False).returncode == 0,
                 60, f"the webhook to admit {name} (its book sees the new policy)")
    kubectl(node_env.endpoints, "wait", "-n", leaving, "--for=condition=Ready", "ipb", "--all", "--timeout=90s")
    assert len(associations(ec2, removed)) == 1 and len(associations(ec2, kept)) == 1
    kubectl(node_env.endpoints, "delete", "namespace", leaving, "--timeout=180s")  # waits until it is gone
    assert associations(ec2, removed) == []
    assert len(associations(ec2, kept)) == 1
    kubectl(node_env.endpoints, "delete", "ipp", "allow-leaving")


def test_uninstall_as_the_readme_says_keeps_every_association(node_env: NodeEnv, ec2, new_instance):
    fleet = [new_instance() for _ in range(2)]  # a set's children, deletionPolicy Delete, go with the rest
    ec2.create_tags(Resources=fleet, Tags=[{"Key": "role", "Value": "journey-fleet"}])
    fleet_set = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InstanceProfileBindingSet", "metadata": {"name": "fleet"},
                 "spec": {"instanceSelector": {"tags": {"role": "journey-fleet"}}, "iamInstanceProfile": {"name": "web-server"}}}
    assert apply(node_env, fleet_set).returncode == 0  # through the webhook (failurePolicy Fail), at /…-sets
    kubectl(node_env.endpoints, "wait", "-n", "default", "--for=condition=Ready", "ipbs/fleet", "--timeout=120s")
    listed = json.loads(kubectl(node_env.endpoints, "get", "ipb", "-A", "-o", "json").stdout)["items"]
    instances = {b["spec"]["instanceId"] for b in listed if b["metadata"]["name"] == "web-1" or
                 b["metadata"]["name"].startswith(("after-", "allowed-", "with-", "fleet-"))}
    assert set(fleet) <= instances
    kubectl(node_env.endpoints, "wait", "-n", "default", "--for=condition=Ready", "ipb", "--all", "--timeout=120s")
    kept = {instance_id: associations(ec2, instance_id) for instance_id in instances}
    kubectl(node_env.endpoints, "delete", "-f", str(CHART / "crds"), "--timeout=120s")
    done = helm(node_env, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout=2m")
    assert done.returncode == 0, done.stderr
    assert {instance_id: associations(ec2, instance_id) for instance_id in instances} == kept
    assert all(kept[i] for i in instances if i != "i-0123456789abcdef0")

    def left() -> str:  # pods go once their containers stopped, after helm returned
        return kubectl(node_env.endpoints, "get", "all,validatingwebhookconfigurations,roles,rolebindings,clusterroles,"
                       "clusterrolebindings,serviceaccounts", "-A", "-l", "app.kubernetes.io/instance=" + RELEASE,
                       "-o", "name").stdout.strip()

    wait_for(lambda: left() == "", 60, "nothing of the release left")
    assert kubectl(node_env.endpoints, "get", "crd", "-o", "name").stdout.count("instanceprofiles.dev") == 0
