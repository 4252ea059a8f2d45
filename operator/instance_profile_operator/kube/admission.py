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

from ..core.api import GROUP, PLURAL, SET_PLURAL, VERSION
from ..core.model import Binding, InvalidSpec, ProfileRef
from ..core.policy import Denied
from ..core.policybook import PolicyBook

WEBHOOK_ID = "tenancy"  # kopf serves the handler at https://HOST:PORT/tenancy
SET_WEBHOOK_ID = "tenancy-sets"  # and the sets' at https://HOST:PORT/tenancy-sets


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
    return _denial(book.evaluate(binding.namespace, desired.profile, desired.target.region))


def set_rejection(body: Mapping[str, Any], book: PolicyBook, default_region: str) -> str | None:
    """As ``rejection``, for an InstanceProfileBindingSet: its profile in its region must be
    allowed in its namespace (each child is judged again, with its instance's tags, at reconcile)."""
    spec = body.get("spec") or {}
    profile = spec.get("iamInstanceProfile") or {}
    try:
        wanted = ProfileRef(arn=profile.get("arn"), name=profile.get("name"))
    except InvalidSpec:
        return None
    namespace = (body.get("metadata") or {}).get("namespace", "")
    return _denial(book.evaluate(namespace, wanted, spec.get("region") or default_region))


def _denial(verdict: object) -> str | None:
    return f"denied by InstanceProfilePolicy: {verdict.message}" if isinstance(verdict, Denied) else None


def webhook_server(address: str, certfile: str, keyfile: str) -> kopf.WebhookServer:
    """kopf's HTTPS server for ``--webhook-address HOST:PORT`` with the given certificate."""
    host, _, port = address.rpartition(":")
    return kopf.WebhookServer(addr=host or None, port=int(port), host=host or None, certfile=certfile, pkeyfile=keyfile)


def register_admission(registry: kopf.OperatorRegistry, book_provider: Callable[[], PolicyBook | None],
                       default_region: str) -> None:
    """Register the validating handlers of bindings and sets; ``book_provider`` returns None until the book is filled
    (bindings are admitted meanwhile). Configure ``settings.admission.server`` with
    ``webhook_server`` and leave ``settings.admission.managed`` unset."""

    def register(plural: str, handler_id: str, judge: Callable[[Mapping[str, Any], PolicyBook, str], str | None]) -> None:
        @kopf.on.validate(GROUP, VERSION, plural, id=handler_id, registry=registry, operations=["CREATE", "UPDATE"],
                          side_effects=False)
        async def validate(body: kopf.Body, old: kopf.BodyEssence | None, operation: str | None, **_: Any) -> None:
            book = book_provider()
            if book is None or not needs_review(operation, body, old):
                return
            message = judge(body, book, default_region)
            if message is not None:
                raise kopf.AdmissionError(message, code=403)

    register(PLURAL, WEBHOOK_ID, rejection)
    register(SET_PLURAL, SET_WEBHOOK_ID, set_rejection)
