"""docs/tenancy.md's two teams run as written: `make demo-tenancy` seeds both accounts and applies
examples/tenancy/ as is; both bindings turn Ready, each in its account; and every escape the docs
list is refused with its documented message, tried as the tenant (kubectl --as)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from instance_profile_operator.devenv.demo import TEAMS_READY
from instance_profile_operator.devenv.seed import DEMO_ACCOUNT, SECOND_ACCOUNT

from ..support.kube import REPO
from ..support.waiting import wait_for

DOC = (REPO / "docs" / "tenancy.md").read_text()
TEAM_A_INSTANCE = "i-17b54958577828ec3"  # team-a-1, tagged team=a (examples/tenancy/30-bindings.yaml)
TEAM_A_OTHER_TAG = "i-1f48fa41eaf762534"  # team-a-2, tagged team=b
TEAM_A_PROFILE = f"arn:aws:iam::{DEMO_ACCOUNT}:instance-profile/team-a/web"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo-tenancy")
    log = directory / "demo.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "instance_profile_operator.devenv", "demo", "--tenancy",
                                    "--dir", str(directory / "env")], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ctrl-C here stops" in log.read_text(errors="replace") or process.poll() is not None,
                 240, "the tenancy demo to report Ready")
        text = log.read_text(errors="replace")
        assert TEAMS_READY in text, text[-3000:]
        exports = next(line.strip() for line in text.splitlines() if line.strip().startswith("export KUBECONFIG="))
        yield dict(part.split("=", 1) for part in exports.removeprefix("export ").split())
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def kubectl(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    binary = Path(env["PATH"].split(":")[0], "kubectl")
    return subprocess.run([str(binary), f"--kubeconfig={env['KUBECONFIG']}", *args], capture_output=True, text=True,
                          input=input, timeout=60)


def binding(namespace: str, name: str, instance_id: str, profile: dict, **spec) -> str:
    return yaml.safe_dump({"apiVersion": "ec2.instanceprofiles.dev/v1alpha1", "kind": "InstanceProfileBinding",
                           "metadata": {"name": name, "namespace": namespace},
                           "spec": {"instanceId": instance_id, "iamInstanceProfile": profile, **spec}})


def test_both_teams_are_ready_each_in_its_account(demo):
    listed = json.loads(kubectl(demo, "get", "ipb", "-A", "-o", "json").stdout)["items"]
    accounts = {item["metadata"]["namespace"]: item["status"]["account"] for item in listed
                if item["metadata"]["namespace"].startswith("team-")}
    assert accounts == {"team-a": DEMO_ACCOUNT, "team-b": SECOND_ACCOUNT}
    table = kubectl(demo, "get", "ipb", "-A").stdout
    assert all(f" {account} " in table for account in accounts.values()), table
    assert kubectl(demo, "apply", "-f", str(REPO / "examples" / "tenancy")).returncode == 0  # as is, again: unchanged


# docs/tenancy.md's table and its tenant RBAC: what a tenant tries, and the message it gets.
ESCAPES = {
    "a profile by name where the policy lists ARNs": (
        ("alice", binding("team-a", "by-name", TEAM_A_INSTANCE, {"name": "web"})), "instance profile web is not allowed"),
    "another region": (
        ("alice", binding("team-a", "elsewhere", TEAM_A_INSTANCE, {"arn": TEAM_A_PROFILE}, region="eu-west-1")),
        "region eu-west-1 is not allowed"),
    "team A's profile from team B": (
        ("bob", binding("team-b", "borrowed", TEAM_A_INSTANCE, {"arn": TEAM_A_PROFILE})),
        "is not allowed in namespace team-b"),
    "a namespace no policy selects": (
        (None, binding("sandbox", "stray", TEAM_A_INSTANCE, {"name": "web"})),
        "no InstanceProfilePolicy selects namespace sandbox; see docs/tenancy.md"),
    "another team's namespace": (
        ("alice", binding("team-b", "intruder", TEAM_A_INSTANCE, {"name": "team-b-worker"})),
        'cannot create resource "instanceprofilebindings" in API group "ec2.instanceprofiles.dev" in the namespace "team-b"'),
}


@pytest.mark.parametrize("escape", ESCAPES)
def test_each_escape_is_refused_with_its_documented_message(demo, escape):
    (user, manifest), message = ESCAPES[escape]
    assert message.split(";")[0] in DOC, f"not documented: {message}"
    done = kubectl(demo, *(["--as", user] if user else []), "create", "-f", "-", input=manifest)
    assert done.returncode != 0 and message in done.stderr, done.stderr


def test_a_tenant_reads_policies_and_cannot_write_status_or_policies(demo):
    assert kubectl(demo, "--as", "alice", "get", "ipp", "team-a").returncode == 0
    status = kubectl(demo, "--as", "alice", "-n", "team-a", "patch", "ipb", "web", "--subresource", "status",
                     "--type", "merge", "-p", '{"status":{"roleArn":null}}')
    assert status.returncode != 0 and 'User "alice" cannot' in status.stderr
    assert 'resource "instanceprofilebindings/status"' in status.stderr
    policy = kubectl(demo, "--as", "alice", "delete", "ipp", "team-b")
    assert policy.returncode != 0 and 'cannot delete resource "instanceprofilepolicies"' in policy.stderr


def test_an_instance_without_the_teams_tag_is_denied_at_reconcile(demo):
    """The webhook reads no EC2: the tag check is the reconcile's, before any change."""
    done = kubectl(demo, "--as", "alice", "create", "-f", "-",
                   input=binding("team-a", "untagged", TEAM_A_OTHER_TAG, {"arn": TEAM_A_PROFILE}))
    assert done.returncode == 0, done.stderr

    def reason() -> dict:
        item = json.loads(kubectl(demo, "--as", "alice", "-n", "team-a", "get", "ipb", "untagged", "-o", "json").stdout)
        return next((c for c in (item.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})

    ready = wait_for(lambda: reason().get("reason") == "PolicyDenied" and reason(), what="PolicyDenied")
    assert "the instance lacks tag `team=a` required by InstanceProfilePolicy team-a" in ready["message"]
