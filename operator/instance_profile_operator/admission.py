"""Admission: reject a binding that no policy allows when it is applied, with the reason.

A convenience, not the guarantee: the reconcile-time check holds when the webhook is down or
skipped (failurePolicy Ignore), and for bindings whose policy changes later. So the webhook
rejects only what is certainly denied: a namespace it has not seen yet, an instance whose tags
cannot be read, or an invalid spec (the schema's job) are admitted. Deleting bindings and
updates that leave the spec alone (finalizers, annotations) are always admitted, so a binding
that lost its policy can still be cleaned up. The webhook configuration is installed by whoever
installs the operator (docs/tenancy.md); the operator serves it with kopf's WebhookServer.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Mapping

import kopf

from .api import GROUP, PLURAL, VERSION
from .faults import AwsFault
from .model import Binding, InvalidSpec
from .policy import Account, Denied, NeedsInstanceTags
from .policybook import PolicyBook

WEBHOOK_ID = "tenancy"  # kopf serves the handler at https://HOST:PORT/tenancy
TagsLookup = Callable[[Account, str, str], Awaitable[Mapping[str, str]]]  # (account, region, instance ID) -> tags

logger = logging.getLogger(__name__)


def needs_review(operation: str | None, body: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """CREATE, and UPDATEs that change the spec of a binding not being deleted."""
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if operation == "CREATE":
        return True
    return operation == "UPDATE" and (old or {}).get("spec") != body.get("spec")


def rejection(body: Mapping[str, Any], book: PolicyBook, default_region: str,
              tags: Mapping[str, Mapping[str, str]] | None = None) -> str | NeedsInstanceTags | None:
    """The message to reject ``body`` with; None to admit it; ``NeedsInstanceTags`` when the
    answer depends on the instance's tags (look them up and ask again)."""
    binding = Binding.from_body(body)
    try:
        desired = binding.desired(default_region)
    except InvalidSpec:
        return None
    verdict = book.evaluate(binding.namespace, desired.profile, desired.target.region, tags)
    if isinstance(verdict, Denied):
        return f"denied by InstanceProfilePolicy: {verdict.message}"
    return verdict if isinstance(verdict, NeedsInstanceTags) else None


async def review(body: Mapping[str, Any], book: PolicyBook, default_region: str, tags_lookup: TagsLookup | None) -> str | None:
    """``rejection``, with the instance's tags looked up when they decide."""
    answer = rejection(body, book, default_region)
    if not isinstance(answer, NeedsInstanceTags):
        return answer
    if tags_lookup is None:
        return None
    desired = Binding.from_body(body).desired(default_region)
    try:
        tags = {account.key: await tags_lookup(account, desired.target.region, desired.target.instance_id)
                for account in answer.accounts}
    except AwsFault as fault:
        logger.warning("Admitting %s unchecked: cannot read the instance's tags: %s", desired.target.instance_id, fault)
        return None
    final = rejection(body, book, default_region, tags)
    return final if isinstance(final, str) else None


def webhook_server(address: str, certfile: str, keyfile: str) -> kopf.WebhookServer:
    """kopf's HTTPS server for ``--webhook-address HOST:PORT`` with the given certificate."""
    host, _, port = address.rpartition(":")
    return kopf.WebhookServer(addr=host or None, port=int(port), host=host or None, certfile=certfile, pkeyfile=keyfile)


def register_admission(registry: kopf.OperatorRegistry, book_provider: Callable[[], PolicyBook | None],
                       tags_lookup: TagsLookup | None, default_region: str) -> None:
    """Register the validating handler; ``book_provider`` returns None until the book is filled
    (bindings are admitted meanwhile). Configure ``settings.admission.server`` with
    ``webhook_server`` and leave ``settings.admission.managed`` unset."""

    @kopf.on.validate(GROUP, VERSION, PLURAL, id=WEBHOOK_ID, registry=registry, operations=["CREATE", "UPDATE"],
                      side_effects=False)
    async def validate(body: kopf.Body, old: kopf.BodyEssence | None, operation: str | None, **_: Any) -> None:
        book = book_provider()
        if book is None or not needs_review(operation, body, old):
            return
        message = await review(body, book, default_region, tags_lookup)
        if message is not None:
            raise kopf.AdmissionError(message, code=403)
