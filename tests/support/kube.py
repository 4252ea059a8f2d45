"""Helpers to drive and read InstanceProfileBindings through the real API server."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from instance_profile_operator.core.api import GROUP, KIND, PLURAL, VERSION
from instance_profile_operator.devenv.cluster import Endpoints

REPO = Path(__file__).resolve().parents[2]


def kubectl(devenv: Endpoints, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [f"{devenv.bin_dir}/kubectl", f"--kubeconfig={devenv.kubeconfig}", *args],
        capture_output=True, text=True, check=check, input=input, timeout=60,
    )


def manifest(name: str, instance_id: str, profile: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"instanceId": instance_id, "iamInstanceProfile": profile or {"name": "web-server"}, **spec},
    }


class Bindings:
    """CRUD on InstanceProfileBindings in one namespace."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str):
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body, field_validation="Strict")

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}, _content_type="application/merge-patch+json")

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def drop_finalizers(self, name: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json")

    def status(self, name: str) -> dict[str, Any]:
        return (self.get(name) or {}).get("status") or {}

    def condition(self, name: str, kind: str = "Ready") -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == kind), {})

    def is_ready(self, name: str) -> bool:
        obj = self.get(name) or {}
        ready = self.condition(name)
        return ready.get("status") == "True" and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]

    def events(self, name: str) -> list[Any]:
        found = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        # creationTimestamp has one-second resolution; the etcd revision orders Events within a second
        return sorted(found.items, key=lambda e: (e.metadata.creation_timestamp, int(e.metadata.resource_version)))

    def event_reasons(self, name: str) -> list[str]:
        return [e.reason for e in self.events(name)]


TEST_LABELS = {"instanceprofiles.dev/test": "true"}
# Tests of everything but tenancy run under policy enforcement (the default) with this policy.
ALLOW_TESTS = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "InstanceProfilePolicy",
    "metadata": {"name": "tests-allow-all"},
    "spec": {"namespaceSelector": {"matchLabels": TEST_LABELS}, "instanceProfiles": [{"name": "*"}, {"arn": "*"}]},
}


def create_namespace(api_client: kubernetes.client.ApiClient, prefix: str = "t", labels: dict[str, str] | None = None) -> str:
    """A new namespace, by default one the ``ALLOW_TESTS`` policy selects."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    labels = TEST_LABELS if labels is None else labels
    kubernetes.client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name, "labels": labels}})
    return name
