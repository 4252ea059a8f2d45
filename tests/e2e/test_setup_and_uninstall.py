"""Issue 6: an uninstall never costs users their instance profiles, set-up errors say what to do,
and kubectl tells the truth while a change is pending."""

from __future__ import annotations

import json
import subprocess
import sys

from instance_profile_operator.core.membership import child_name
from instance_profile_operator.kube.listwatch import UNSERVED

from ..support.kube import REPO, Bindings, kubectl, manifest
from ..support.waiting import wait_for
from .test_lifecycle import associations, mutations
from .test_sets import Sets, sets, tagged, unique_tag  # noqa: F401 (fixture)

BINDINGS_CRD = "crd/instanceprofilebindings.ec2.instanceprofiles.dev"
SETS_CRD = "crd/instanceprofilebindingsets.ec2.instanceprofiles.dev"
BINDINGS_CRD_FILE, SETS_CRD_FILE = (str(REPO / "crds" / f) for f in ("instanceprofilebinding.yaml", "instanceprofilebindingset.yaml"))


def remove_finalizers_by_hand(devenv, keep_namespace: str | None = None) -> None:
    """What the README says to do once the operator is gone for good (here: other tests' leftovers,
    whose operators have stopped, would otherwise hold the CRD's deletion)."""
    listed = json.loads(kubectl(devenv, "get", "ipb", "-A", "-o", "json").stdout)["items"]
    for item in listed:
        meta = item["metadata"]
        if meta["namespace"] != keep_namespace and meta.get("finalizers"):
            kubectl(devenv, "patch", "ipb", meta["name"], "-n", meta["namespace"], "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}')


def install_crd(devenv) -> None:
    kubectl(devenv, "apply", "-f", str(REPO / "crds" / "instanceprofilebinding.yaml"))
    kubectl(devenv, "wait", "--for=condition=Established", "--timeout=30s", BINDINGS_CRD)
    wait_for(lambda: kubectl(devenv, "explain", "ipb.spec", check=False).returncode == 0, what="the CRD's OpenAPI")


def install_set_crd(devenv) -> None:
    kubectl(devenv, "apply", "-f", SETS_CRD_FILE)
    kubectl(devenv, "wait", "--for=condition=Established", "--timeout=30s", SETS_CRD)
    wait_for(lambda: kubectl(devenv, "explain", "ipbs.spec", check=False).returncode == 0, what="the sets CRD's OpenAPI")


def a_fleet_ready(sets: Sets, ec2, new_instance) -> list[str]:
    """Two instances of a set with deletionPolicy Delete: a user's deletion would disassociate them."""
    role = unique_tag()
    fleet = [tagged(ec2, new_instance, role=role) for _ in range(2)]
    sets.create("web", {"role": role}, deletionPolicy="Delete")
    wait_for(lambda: sets.ready("web", 2), 30, "2 children Ready")
    return fleet


def released_once(bindings: Bindings, name: str, *crd_kinds: str) -> None:
    """One Released Event, naming the CRD (one of ``crd_kinds``) whose deletion released it."""
    [released] = [e for e in bindings.events(name) if e.reason == "Released"]
    assert any(f"the {kind} CRD is being deleted" in released.message for kind in crd_kinds), released.message
    assert "without touching EC2" in released.message and (released.count or 1) == 1


def test_deleting_the_crd_releases_bindings_without_touching_ec2_and_serving_resumes(
        devenv, start_operator, bindings: Bindings, ec2, new_instance):
    operator = start_operator()
    deleted, retained = new_instance(), new_instance()
    bindings.create(manifest("deleted", deleted))
    bindings.create(manifest("retained", retained, deletionPolicy="Retain"))
    wait_for(lambda: bindings.is_ready("deleted") and bindings.is_ready("retained"), what="both bindings Ready")
    before = {i: associations(ec2, i)[0]["AssociationId"] for i in (deleted, retained)}
    remove_finalizers_by_hand(devenv, keep_namespace=bindings.namespace)
    try:
        kubectl(devenv, "delete", "-f", str(REPO / "crds" / "instanceprofilebinding.yaml"), "--timeout=60s")
        assert kubectl(devenv, "get", BINDINGS_CRD, check=False).returncode != 0  # the uninstall completed
        for instance_id, association_id in before.items():
            [association] = associations(ec2, instance_id)
            assert (association["AssociationId"], association["State"]) == (association_id, "associated")
        assert mutations(operator)["disassociate_iam_instance_profile"] == 0
        for name in ("deleted", "retained"):
            [released] = [e for e in bindings.events(name) if e.reason == "Released"]  # one, from one path
            assert "without touching EC2" in released.message and (released.count or 1) == 1
        wait_for(lambda: "released 2 bindings on uninstall" in operator.log(), what="the count of both paths logged")
        wait_for(lambda: UNSERVED in operator.log(), what="the operator to say the resource is not served")
        assert operator.process.poll() is None
    finally:
        install_crd(devenv)
    # back without a restart: the same bindings are adopted, nothing is re-associated
    bindings.create(manifest("deleted", deleted))
    bindings.create(manifest("retained", retained, deletionPolicy="Retain"))
    wait_for(lambda: bindings.is_ready("deleted") and bindings.is_ready("retained"), what="Ready again")
    assert {i: bindings.status(n)["associationId"] for n, i in (("deleted", deleted), ("retained", retained))} == before
    assert f"{bindings.namespace}/deleted: adopted association {before[deleted]}" in operator.log()
    assert mutations(operator)["associate_iam_instance_profile"] == 2  # the first two only
    assert operator.log().count(UNSERVED) == 1  # said once, not at every CRD change
    assert operator.process.poll() is None
    for name in ("deleted", "retained"):
        bindings.delete(name)
    wait_for(lambda: bindings.get("deleted") is None and bindings.get("retained") is None, what="the bindings deleted")
    assert associations(ec2, retained) and not [a for a in associations(ec2, deleted) if a["State"] != "disassociated"]


def test_operator_started_before_its_crd_serves_it_once_installed(devenv, start_operator, bindings: Bindings, new_instance):
    remove_finalizers_by_hand(devenv)
    kubectl(devenv, "delete", "-f", str(REPO / "crds" / "instanceprofilebinding.yaml"), "--timeout=60s")
    try:
        operator = start_operator()
        wait_for(lambda: UNSERVED in operator.log(), what="the operator to say the resource is not served")
    finally:
        install_crd(devenv)
    bindings.create(manifest("late-crd", new_instance()))
    wait_for(lambda: bindings.is_ready("late-crd"), 30, "Ready once the CRD is installed")
    assert operator.process.poll() is None


def test_no_aws_credentials_is_a_stalled_set_up_error_that_names_the_fix(start_operator, bindings: Bindings, new_instance):
    operator = start_operator(AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="", AWS_SESSION_TOKEN="",
                              AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent",
                              AWS_EC2_METADATA_DISABLED="true")
    bindings.create(manifest("no-creds", new_instance()))
    stalled = wait_for(lambda: bindings.condition("no-creds", "Stalled"), what="Stalled")
    ready = bindings.condition("no-creds")
    assert stalled["status"] == "True" and stalled["reason"] == ready["reason"] == "CredentialsUnavailable"
    assert "Unable to locate credentials" in ready["message"]
    assert "IRSA" in ready["message"] and "Pod Identity" in ready["message"] and "AWS_ACCESS_KEY_ID" in ready["message"]
    assert not bindings.condition("no-creds", "Reconciling")
    assert [e.type for e in bindings.events("no-creds") if e.reason == "CredentialsUnavailable"] == ["Warning"]
    assert operator.process.poll() is None


def test_kubectl_shows_the_current_profile_beside_the_declared_one_while_a_change_is_pending(
        devenv, operator, proxy, bindings: Bindings, new_instance):
    bindings.create(manifest("moving", new_instance()))
    wait_for(lambda: bindings.is_ready("moving"), what="Ready")
    proxy.fail("ReplaceIamInstanceProfileAssociation", "InternalError", "try again later", status=500, times=None)
    bindings.patch_spec("moving", {"iamInstanceProfile": {"name": "batch-worker"}})

    def row() -> dict[str, str]:
        table = kubectl(devenv, "get", "ipb", "moving", "-n", bindings.namespace).stdout.splitlines()
        return dict(zip(table[0].split(), table[1].split()))

    pending = wait_for(lambda: (r := row())["READY"] == "False" and r, 30, "Ready=False while the replacement fails")
    assert (pending["PROFILE"], pending["CURRENT"], pending["STATE"]) == ("batch-worker", "web-server", "associated")
    proxy.clear()
    wait_for(lambda: row()["CURRENT"] == "batch-worker" and row()["READY"] == "True", 30, "the change done")


def test_without_a_kubeconfig_the_operator_exits_at_once_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "instance_profile_operator.cli", "run", "--region", "us-east-1"],
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "no Kubernetes configuration" in done.stderr and "KUBECONFIG" in done.stderr


# Last in the module: each leaves both CRDs deleted and installed again, and kopf resumes serving a
# re-installed CRD only if API discovery lists it by the time of the CRD's last watch event.
def test_deleting_the_sets_crd_alone_releases_their_children_without_touching_ec2(
        devenv, start_operator, sets: Sets, ec2, new_instance):
    """Kubernetes deletes every set; the operator deletes their children (the garbage collector
    retries an owner whose kind is gone until its CRD is back, then deletes them as a user would),
    while bindings are still served: they go as for an uninstall, not a user's deletion, and the
    CRD installed again finds none left for the garbage collector to delete later."""
    operator = start_operator()
    fleet = a_fleet_ready(sets, ec2, new_instance)
    before = {i: associations(ec2, i) for i in fleet}
    try:
        kubectl(devenv, "delete", "-f", SETS_CRD_FILE, "--timeout=60s")
        wait_for(lambda: all(sets.bindings.get(child_name("web", i)) is None for i in fleet), 60, "the children gone")
    finally:
        install_set_crd(devenv)
    assert {i: associations(ec2, i) for i in fleet} == before
    assert mutations(operator)["disassociate_iam_instance_profile"] == 0
    for instance_id in fleet:
        released_once(sets.bindings, child_name("web", instance_id), "InstanceProfileBindingSet")
    assert operator.process.poll() is None


def test_uninstall_as_the_readme_says_with_a_set_keeps_every_association(
        devenv, start_operator, sets: Sets, bindings: Bindings, ec2, new_instance):
    """kubectl delete -f crds/ deletes the bindings' CRD, then the sets' (the policies' CRD, which the
    session's other tests need, stays): neither the set's children nor a binding touch EC2."""
    operator = start_operator()
    fleet = a_fleet_ready(sets, ec2, new_instance)
    single = new_instance()
    bindings.create(manifest("single", single))
    wait_for(lambda: bindings.is_ready("single"), what="the binding Ready")
    before = {i: associations(ec2, i) for i in (*fleet, single)}
    remove_finalizers_by_hand(devenv, keep_namespace=bindings.namespace)
    try:
        kubectl(devenv, "delete", "-f", BINDINGS_CRD_FILE, "-f", SETS_CRD_FILE, "--timeout=60s")
        for crd in (BINDINGS_CRD, SETS_CRD):  # the uninstall completed
            assert kubectl(devenv, "get", crd, check=False).returncode != 0
    finally:
        install_crd(devenv)
        install_set_crd(devenv)
    assert {i: associations(ec2, i) for i in (*fleet, single)} == before
    assert mutations(operator)["disassociate_iam_instance_profile"] == 0
    released_once(bindings, "single", "InstanceProfileBinding")
    for instance_id in fleet:  # whichever uninstall reached the child first: the bindings' or the sets'
        released_once(bindings, child_name("web", instance_id), "InstanceProfileBinding", "InstanceProfileBindingSet")
    assert operator.process.poll() is None
