"""The admission webhook, served in-process, called by the real API server on kubectl apply; what
it does not judge (matchConditions) never reaches it."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Iterator

import pytest
import yaml

from instance_profile_operator.kube.admission import serve_admission, webhook_server
from instance_profile_operator.devenv import pki, webhook
from instance_profile_operator.devenv.cluster import free_port
from instance_profile_operator.core.policybook import PolicyBook

from ..support.kube import kubectl, manifest
from ..support.waiting import wait_for


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def book() -> PolicyBook:
    return PolicyBook()


@pytest.fixture
def admission_webhook(devenv, crd, book, tmp_path) -> Iterator[None]:
    """The admission server alone (no kopf operator, as a standby runs it), and the configuration
    that points the API server at it."""
    credentials = pki.generate(tmp_path / "webhook-pki")
    address = f"127.0.0.1:{free_port()}"
    server = webhook_server(address, str(credentials.serving_cert), str(credentials.serving_key))
    loop = asyncio.new_event_loop()
    serving = loop.create_task(serve_admission(server, lambda: book, devenv.region))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    wait_for(lambda: listening(int(address.rpartition(":")[2])), what="the webhook server")
    config = webhook.configuration(address, credentials.ca_cert)
    kubectl(devenv, "apply", "-f", "-", input=yaml.safe_dump(config))
    yield
    kubectl(devenv, "delete", "validatingwebhookconfiguration", webhook.NAME)
    loop.call_soon_threadsafe(serving.cancel)
    wait_for(serving.done, what="the webhook server stopped")
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=30)


def apply(devenv, namespace: str, body: dict, *flags: str):
    return kubectl(devenv, "apply", "-n", namespace, *flags, "-f", "-", input=yaml.safe_dump(body), check=False)


def test_kubectl_apply_of_a_disallowed_binding_is_rejected_with_the_reason(devenv, namespace, book, admission_webhook):
    book.on_namespace("ADDED", {"metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}}})
    book.on_policy("ADDED", {"metadata": {"name": "web-only"}, "spec": {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}, "instanceProfiles": [{"name": "web-*"}]}})

    batch = manifest("batch", "i-0123456789abcdef0", {"name": "batch-worker"})
    # the API server calls the webhook once the configuration reached its informer: probe with dry runs
    wait_for(lambda: "denied the request" in apply(devenv, namespace, batch, "--dry-run=server").stderr, what="the webhook to answer")
    denied = apply(devenv, namespace, batch)
    assert denied.returncode != 0
    assert ('admission webhook "tenancy.instanceprofilebindings.ec2.instanceprofiles.dev" denied the request: '
            f"denied by InstanceProfilePolicy: instance profile batch-worker is not allowed in namespace {namespace} "
            "(InstanceProfilePolicy web-only)") in denied.stderr
    assert kubectl(devenv, "get", "ipb", "batch", "-n", namespace, check=False).returncode != 0

    allowed = apply(devenv, namespace, manifest("web", "i-0123456789abcdef0", {"name": "web-server"}))
    assert allowed.returncode == 0, allowed.stderr

    changed = apply(devenv, namespace, manifest("web", "i-0123456789abcdef0", {"name": "batch-worker"}))
    assert changed.returncode != 0 and "instance profile batch-worker is not allowed" in changed.stderr

    book.on_policy("DELETED", {"metadata": {"name": "web-only"}})
    relabelled = kubectl(devenv, "label", "ipb", "web", "-n", namespace, "touched=yes")
    assert relabelled.returncode == 0  # updates that leave the spec alone pass, policy or not


def binding_set(name: str, profile: dict[str, str]) -> dict:
    return {"apiVersion": "ec2.instanceprofiles.dev/v1alpha1", "kind": "InstanceProfileBindingSet", "metadata": {"name": name},
            "spec": {"instanceSelector": {"tags": {"role": "web"}}, "iamInstanceProfile": profile}}


def test_kubectl_apply_of_a_disallowed_set_is_rejected_at_its_own_path(devenv, namespace, book, admission_webhook):
    book.on_namespace("ADDED", {"metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}}})
    book.on_policy("ADDED", {"metadata": {"name": "web-only"}, "spec": {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}, "instanceProfiles": [{"name": "web-*"}]}})

    batch = binding_set("batch", {"name": "batch-worker"})
    wait_for(lambda: "denied the request" in apply(devenv, namespace, batch, "--dry-run=server").stderr, what="the webhook to answer")
    denied = apply(devenv, namespace, batch)
    assert ('admission webhook "tenancy-sets.instanceprofilebindingsets.ec2.instanceprofiles.dev" denied the request: '
            f"denied by InstanceProfilePolicy: instance profile batch-worker is not allowed in namespace {namespace} "
            "(InstanceProfilePolicy web-only)") in denied.stderr
    assert kubectl(devenv, "get", "ipbs", "batch", "-n", namespace, check=False).returncode != 0
    allowed = apply(devenv, namespace, binding_set("web", {"name": "web-server"}))
    assert allowed.returncode == 0, allowed.stderr


def test_metadata_only_updates_never_reach_the_webhook(devenv, namespace, tmp_path):
    """matchConditions: with failurePolicy Fail and nothing listening, creates and spec changes are
    refused, while a finalizer is added and removed (the README's recipe) and a label is set."""
    credentials = pki.generate(tmp_path / "webhook-pki")
    web = manifest("web", "i-0123456789abcdef0", {"name": "web-server"})
    assert apply(devenv, namespace, web).returncode == 0
    assert apply(devenv, namespace, binding_set("fleet", {"name": "web-server"})).returncode == 0
    kubectl(devenv, "apply", "-f", "-", input=yaml.safe_dump(webhook.configuration(f"127.0.0.1:{free_port()}", credentials.ca_cert)))
    try:
        changed = manifest("web", "i-0123456789abcdef0", {"name": "batch-worker"})
        wait_for(lambda: "failed calling webhook" in apply(devenv, namespace, changed, "--dry-run=server").stderr,
                 what="the API server to call the (closed) webhook")
        assert "failed calling webhook" in apply(devenv, namespace, manifest("new", "i-0123456789abcdef0", {"name": "web-server"})).stderr
        assert "failed calling webhook" in apply(devenv, namespace, binding_set("fleet", {"name": "batch-worker"})).stderr
        for kind, name in (("ipb", "web"), ("ipbs", "fleet")):
            for patch in ('{"metadata":{"finalizers":["example.com/hold"]}}', '{"metadata":{"finalizers":null}}',
                          '{"metadata":{"labels":{"touched":"yes"}}}'):
                patched = kubectl(devenv, "patch", kind, name, "-n", namespace, "--type=merge", "-p", patch, check=False)
                assert patched.returncode == 0, patched.stderr
            kubectl(devenv, "delete", kind, name, "-n", namespace, "--wait=false")
    finally:
        kubectl(devenv, "delete", "validatingwebhookconfiguration", webhook.NAME, "--ignore-not-found")
