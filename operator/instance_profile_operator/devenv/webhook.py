"""The ValidatingWebhookConfiguration the development environment installs: the local API server
calls the operator's admission webhook at https://127.0.0.1:PORT/tenancy, trusting the CA that
signed the webhook's certificate. (In a real cluster the chart installs it with a Service
reference; see docs/tenancy.md.)"""

from __future__ import annotations

import base64
import string
from pathlib import Path

import yaml

from ..core.api import GROUP, PLURAL, VERSION
from ..kube.admission import WEBHOOK_ID

NAME = "instance-profile-operator"

TEMPLATE = string.Template(f"""\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: {NAME}
webhooks:
  - name: {WEBHOOK_ID}.{PLURAL}.{GROUP}
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
        resources: [{PLURAL}]
        scope: Namespaced
""")


def configuration(address: str, ca_cert: Path, failure_policy: str = "Fail") -> dict:
    """The configuration for a webhook served at ``address`` (HOST:PORT) with a certificate
    signed by ``ca_cert``. The development environment fails closed, so a broken webhook shows."""
    text = TEMPLATE.substitute(
        url=f"https://{address}/{WEBHOOK_ID}", ca_bundle=base64.b64encode(ca_cert.read_bytes()).decode(),
        failure_policy=failure_policy,
    )
    return yaml.safe_load(text)
