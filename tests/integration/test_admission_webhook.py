"""The admission webhook, served by kopf in-process, called by the real API server on kubectl apply."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Iterator

import kopf
import pytest
import yaml

from instance_profile_operator.kube.admission import register_admission, webhook_server
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
    """kopf serving only the admission handler, and the configuration that points the API server at it."""
    credentials = pki.generate(tmp_path / "webhook-pki")
    address = f"127.0.0.1:{free_port()}"
    registry = kopf.OperatorRegistry()
    register_admission(registry, lambda: book, default_region=devenv.region)

    @kopf.on.login(registry=registry)
    def login(**_) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=devenv.apiserver_url, ca_path=devenv.ca_cert, token=devenv.admin_token)

    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.admission.server = webhook_server(address, str(credentials.serving_cert), str(credentials.serving_key))
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(kopf.operator(
        registry=registry, settings=settings, clusterwide=True, stop_flag=stop)), daemon=True)
    thread.start()
    wait_for(lambda: listening(int(address.rpartition(":")[2])), what="the webhook server")
    config = webhook.configuration(address, credentials.ca_cert)
    kubectl(devenv, "apply", "-f", "-", input=yaml.safe_dump(config))
    yield
    kubectl(devenv, "delete", "validatingwebhookconfiguration", webhook.NAME)
    stop.set()
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
