"""The ValidatingWebhookConfiguration the development environment installs: the local API server
calls the operator's admission webhooks at https://127.0.0.1:PORT/tenancy (bindings) and /tenancy-sets (sets), trusting the CA that
signed the webhook's certificate. (In a real cluster the chart installs it with a Service
reference; see docs/tenancy.md.)"""

from __future__ import annotations

import base64
import string
from pathlib import Path

import yaml

from ..core.api import GROUP, PLURAL, SET_PLURAL, VERSION
from ..kube.admission import SET_WEBHOOK_ID, WEBHOOK_ID

NAME = "instance-profile-operator"

WEBHOOK = string.Template(f"""\
name: $handler.$plural.{GROUP}
admissionReviewVersions: [v1]
sideEffects: None           # the webhook only reads (policies, instance tags)
failurePolicy: $failure_policy
timeoutSeconds: 5
matchPolicy: Equivalent
matchConditions:            # what the webhook judges; metadata-only updates (finalizers) never depend on it
  - name: creates-and-spec-changes
    expression: "request.operation == 'CREATE' || object.spec != oldObject.spec"
clientConfig:
  url: $url
  caBundle: $ca_bundle
rules:
  - apiGroups: [{GROUP}]
    apiVersions: [{VERSION}]
    operations: [CREATE, UPDATE]
    resources: [$plural]
    scope: Namespaced
""")
HANDLERS = ((WEBHOOK_ID, PLURAL), (SET_WEBHOOK_ID, SET_PLURAL))  # bindings', sets'


def configuration(address: str, ca_cert: Path, failure_policy: str = "Fail") -> dict:
    """The configuration for a webhook served at ``address`` (HOST:PORT) with a certificate
    signed by ``ca_cert``. The development environment fails closed, so a broken webhook shows."""
    ca_bundle = base64.b64encode(ca_cert.read_bytes()).decode()
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [yaml.safe_load(WEBHOOK.substitute(handler=handler, plural=plural, url=f"https://{address}/{handler}",
                                                       ca_bundle=ca_bundle, failure_policy=failure_policy))
                     for handler, plural in HANDLERS],
    }
