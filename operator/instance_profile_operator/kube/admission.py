"""Admission: reject a binding that no policy allows when it is applied, with the reason.

A convenience, not the guarantee: the reconcile-time check holds when the webhook is down or
skipped (failurePolicy Ignore), and for bindings whose policy changes later. So the webhook
rejects only what is certainly denied: a namespace it has not seen yet, a binding whose verdict
hangs on the instance's tags, or an invalid spec (the schema's job) are admitted. It reads
Kubernetes state only (policies, namespaces, the binding) and never calls EC2: whoever reaches
its port cannot make the operator spend its EC2 budget nor learn an instance's tags; instance
tags are checked at reconcile time, before any change (docs/tenancy.md). Deleting bindings and
updates that leave the spec alone (finalizers, annotations) are always admitted, so a binding
that lost its policy can still be cleaned up. The webhook configuration is installed by whoever
installs the operator (docs/tenancy.md); the operator serves it with kopf's WebhookServer.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import kopf

from ..core.api import GROUP, PLURAL, VERSION
from ..core.model import Binding, InvalidSpec
from ..core.policy import Denied
from ..core.policybook import PolicyBook

WEBHOOK_ID = "tenancy"  # kopf serves the handler at https://HOST:PORT/tenancy


def needs_review(operation: str | None, body: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """CREATE, and UPDATEs that change the spec of a binding not being deleted."""
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if operation == "CREATE":
        return True
    return operation == "UPDATE" and (old or {}).get("spec") != body.get("spec")


def rejection(body: Mapping[str, Any], book: PolicyBook, default_region: str) -> str | None:
    """The message to reject ``body`` with; None to admit it (also when the verdict depends on the
    instance's tags: the reconcile checks them)."""
    binding = Binding.from_body(body)
    try:
        desired = binding.desired(default_region)
    except InvalidSpec:
        return None
    verdict = book.evaluate(binding.namespace, desired.profile, desired.target.region)
    return f"denied by InstanceProfilePolicy: {verdict.message}" if isinstance(verdict, Denied) else None


def webhook_server(address: str, certfile: str, keyfile: str) -> kopf.WebhookServer:
    """kopf's HTTPS server for ``--webhook-address HOST:PORT`` with the given certificate."""
    host, _, port = address.rpartition(":")
    return kopf.WebhookServer(addr=host or None, port=int(port), host=host or None, certfile=certfile, pkeyfile=keyfile)


def register_admission(registry: kopf.OperatorRegistry, book_provider: Callable[[], PolicyBook | None],
                       default_region: str) -> None:
    """Register the validating handler; ``book_provider`` returns None until the book is filled
    (bindings are admitted meanwhile). Configure ``settings.admission.server`` with
    ``webhook_server`` and leave ``settings.admission.managed`` unset."""

    @kopf.on.validate(GROUP, VERSION, PLURAL, id=WEBHOOK_ID, registry=registry, operations=["CREATE", "UPDATE"],
                      side_effects=False)
    async def validate(body: kopf.Body, old: kopf.BodyEssence | None, operation: str | None, **_: Any) -> None:
        book = book_provider()
        if book is None or not needs_review(operation, body, old):
            return
        message = rejection(body, book, default_region)
        if message is not None:
            raise kopf.AdmissionError(message, code=403)
