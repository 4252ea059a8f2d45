"""What an operator needs in the development environment before it runs: the CRDs, the demo's
tenancy policy (examples/policies/), and its admission webhook wired to the local API server
(a serving certificate in DIR/webhook/ and a ValidatingWebhookConfiguration calling
https://127.0.0.1:PORT). Returns the operator's environment variables for that webhook."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from . import pki, webhook
from .cluster import Endpoints, free_port

REPO = Path(__file__).resolve().parents[3]
CRDS = ("instanceprofilebindings", "instanceprofilepolicies")


def kubectl(endpoints: Endpoints, *args: str, input: str | None = None) -> str:
    done = subprocess.run([f"{endpoints.bin_dir}/kubectl", f"--kubeconfig={endpoints.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=60, input=input)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def install(endpoints: Endpoints, directory: Path, failure_policy: str) -> dict[str, str]:
    """Install the CRDs, the demo policy and the webhook configuration; the webhook's variables."""
    kubectl(endpoints, "apply", "-f", str(REPO / "crds"))
    kubectl(endpoints, "wait", "--for=condition=Established", "--timeout=30s",
            *(f"crd/{name}.ec2.instanceprofiles.dev" for name in CRDS))
    kubectl(endpoints, "apply", "-f", str(REPO / "examples" / "policies"))
    credentials = pki.generate(directory / "webhook")
    address = f"127.0.0.1:{free_port()}"
    configuration = webhook.configuration(address, credentials.ca_cert, failure_policy)
    kubectl(endpoints, "apply", "-f", "-", input=yaml.safe_dump(configuration))
    return {
        "IPO_WEBHOOK_ADDRESS": address,
        "IPO_WEBHOOK_CERT_FILE": str(credentials.serving_cert),
        "IPO_WEBHOOK_KEY_FILE": str(credentials.serving_key),
    }
