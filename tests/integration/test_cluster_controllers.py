"""kube-controller-manager runs in every dev environment: what a real cluster does on its own,
with no operator running (so no binding carries the operator's finalizer)."""

from __future__ import annotations

import base64
from pathlib import Path

import kubernetes
from kubernetes.client.exceptions import ApiException

from instance_profile_operator.core.api import GROUP, PLURAL, VERSION
from instance_profile_operator.devenv.cluster import Endpoints

from ..support.kube import Bindings, manifest
from ..support.waiting import wait_for

# The controllers start within seconds; a namespace's content goes in one sweep.
CONTROLLER_TIMEOUT = 60


def _absent(read) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _present(read):
    try:
        return read()
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_a_new_namespace_gets_its_default_service_account_and_the_cluster_ca(
        devenv: Endpoints, api_client: kubernetes.client.ApiClient, namespace: str):
    core = kubernetes.client.CoreV1Api(api_client)
    wait_for(lambda: _present(lambda: core.read_namespaced_service_account("default", namespace)),
             CONTROLLER_TIMEOUT, "the default ServiceAccount")
    root_ca = wait_for(lambda: _present(lambda: core.read_namespaced_config_map("kube-root-ca.crt", namespace)),
                       CONTROLLER_TIMEOUT, "the kube-root-ca.crt ConfigMap")
    assert root_ca.data["ca.crt"] == Path(devenv.ca_cert).read_text()


def test_a_service_account_token_secret_is_filled_with_a_token_the_api_server_accepts(
        devenv: Endpoints, api_client: kubernetes.client.ApiClient, namespace: str):
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    core.create_namespaced_secret(namespace, {
        "metadata": {"name": "reader-token", "annotations": {"kubernetes.io/service-account.name": "reader"}},
        "type": "kubernetes.io/service-account-token",
    })
    secret = wait_for(lambda: (core.read_namespaced_secret("reader-token", namespace).data or {}).get("token"),
                      CONTROLLER_TIMEOUT, "the token controller to fill the Secret")
    configuration = kubernetes.client.Configuration()
    configuration.host = devenv.apiserver_url
    configuration.ssl_ca_cert = devenv.ca_cert
    configuration.api_key = {"authorization": f"Bearer {base64.b64decode(secret).decode()}"}
    with kubernetes.client.ApiClient(configuration) as client:
        review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review({})
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:reader"


def test_deleting_a_namespace_deletes_its_bindings(api_client: kubernetes.client.ApiClient, namespace: str,
                                                   bindings: Bindings):
    bindings.create(manifest("web", "i-0123456789abcdef0"))
    kubernetes.client.CoreV1Api(api_client).delete_namespace(namespace)
    wait_for(lambda: _absent(lambda: kubernetes.client.CoreV1Api(api_client).read_namespace(namespace)),
             CONTROLLER_TIMEOUT, "the namespace to be gone")
    every = kubernetes.client.CustomObjectsApi(api_client).list_cluster_custom_object(
        GROUP, VERSION, PLURAL, field_selector=f"metadata.namespace={namespace}")
    assert every["items"] == []


def test_a_binding_owned_by_a_deleted_object_is_garbage_collected(api_client: kubernetes.client.ApiClient,
                                                                  namespace: str, bindings: Bindings):
    core = kubernetes.client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    owned = manifest("owned", "i-0123456789abcdef0")
    owned["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]
    bindings.create(owned)
    bindings.create(manifest("unowned", "i-0123456789abcdef1"))
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(lambda: bindings.get("owned") is None, CONTROLLER_TIMEOUT, "the garbage collector to delete the binding")
    assert bindings.get("unowned") is not None

