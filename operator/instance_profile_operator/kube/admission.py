"""Admission: reject a binding or a set that no policy allows when it is applied, with the reason.

A convenience, not the guarantee: the reconcile-time check holds when the webhook is down or
skipped (failurePolicy Ignore), and for bindings whose policy changes later. So the webhook
rejects only what is certainly denied: a namespace it has not seen yet, a binding whose verdict
hangs on the instance's tags, or an invalid spec (the schema's job) are admitted. It reads
Kubernetes state only (policies, namespaces, the binding) and never calls EC2: whoever reaches
its port cannot make the operator spend its EC2 budget nor learn an instance's tags; instance
tags are checked at reconcile time, before any change (docs/tenancy.md). Deleting bindings and
updates that leave the spec alone (finalizers, annotations) are always admitted, so a binding
that lost its policy can still be cleaned up. The webhook configuration is installed by whoever
installs the operator (docs/tenancy.md). Every replica serves it (kopf's WebhookServer, outside
kopf's operator), from a policy book of its own (kube/bookwatch.py): admission needs no leadership.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import kopf

from ..core.model import Binding, InvalidSpec, ProfileRef
from ..core.policy import Denied
from ..core.policybook import PolicyBook

WEBHOOK_ID = "tenancy"  # kopf serves the handler at https://HOST:PORT/tenancy
SET_WEBHOOK_ID = "tenancy-sets"  # and the sets' at https://HOST:PORT/tenancy-sets
log = logging.getLogger(__name__)


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


async def serve_admission(server: kopf.WebhookServer, book_provider: Callable[[], PolicyBook | None],
                          default_region: str) -> None:
    """Serve admission reviews until cancelled, with kopf's HTTPS server (which reloads a renewed
    certificate) and none of kopf's operator: it runs on every replica, leader or standby.
    ``book_provider`` returns None until the book is filled (everything is admitted meanwhile)."""

    async def respond(request: Mapping[str, Any], webhook: str | None = None, **_: Any) -> dict[str, Any]:
        answer = review(request, book_provider(), default_region, webhook or "")
        if not answer["response"]["allowed"]:  # the webhook working as designed, not failing
            log.info("Webhook %r refused the request: %s", webhook, answer["response"]["status"]["message"])
        return answer

    async for _ in server(respond):  # type: ignore[arg-type]
        pass


JUDGES: dict[str, Callable[[Mapping[str, Any], PolicyBook, str], str | None]] = {
    WEBHOOK_ID: rejection, SET_WEBHOOK_ID: set_rejection}  # by the path the configuration names


def review(request: Mapping[str, Any], book: PolicyBook | None, default_region: str,
           webhook: str) -> dict[str, Any]:
    """The AdmissionReview (admission.k8s.io/v1) that answers ``request`` sent to ``/webhook``
    (a path that serves nothing refuses, naming the paths that do: a configuration's mistake)."""
    asked = request.get("request") or {}
    judge = JUDGES.get(webhook)
    message = None
    if judge is None:
        message = f"no admission webhook at /{webhook}; the operator serves " + ", ".join(f"/{id}" for id in JUDGES)
    elif book is not None and needs_review(asked.get("operation"), asked.get("object") or {}, asked.get("oldObject")):
        message = judge(asked["object"], book, default_region)
    response: dict[str, Any] = {"uid": asked.get("uid", ""), "allowed": message is None}
    if message is not None:
        response["status"] = {"code": 403 if judge else 404, "message": message}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
