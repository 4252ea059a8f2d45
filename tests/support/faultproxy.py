"""A small fault-injecting HTTP proxy in front of moto's server.

moto does not throttle, fail with 5xx, delay IAM propagation, leave associations in
``associating`` or lag its describes behind its mutations (EC2 is eventually consistent); this
proxy makes those things happen on request, and counts every EC2
action that passes through it (the operator's API calls, as EC2 would bill them).

moto does not check credentials either: the proxy records who signed each request (``signed``:
action, access key ID, region), refuses requests signed with keys it knows to have expired
(``expire``), and can make the credentials STS hands out short-lived (``short_lived_sts``).
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from .credentials import iso
from .localserver import LocalServer, QuietHandler, respond

_SIGNER = re.compile(r"Credential=(?P<key>[^/]+)/[0-9]{8}/(?P<region>[^/]+)/")
_ISSUED = re.compile(rb"<AccessKeyId>(?P<key>[^<]+)</AccessKeyId>")
_EXPIRATION = re.compile(rb"<Expiration>[^<]*</Expiration>")
_STS_ISSUING = ("AssumeRole", "AssumeRoleWithWebIdentity")
ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
)


@dataclass
class Fault:
    action: str
    code: str
    message: str
    status: int
    remaining: int | None  # None: until cleared
    match: str | None  # substring of the request body, e.g. an instance ID
    hold: float = 0.0  # seconds before the error is answered: a call that fails slowly


class FaultProxy(LocalServer):
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.bodies: list[str] = []  # every request, for ``mentioning``
        self.in_flight = 0
        self._faults: list[Fault] = []
        self._associating_describes = 0
        self._pending_describes = 0
        self._delays: dict[str, float] = {}
        self._hide_for = 0.0
        self._hidden: dict[bytes, float] = {}  # association ID -> until when describes miss it
        self.signed: Counter[tuple[str, str, str]] = Counter()  # (action, access key ID, region) of signed requests
        self.issued: dict[str, list[str]] = {action: [] for action in _STS_ISSUING}  # access key IDs STS handed out
        self.expired_refused = 0  # requests signed with an expired key
        self._expiry: dict[str, float] = {}  # access key ID -> when it expires (time.time())
        self._sts_lifetime: float | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy._lock:
                    proxy.in_flight += 1
                try:
                    proxy._handle(self, body)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

        super().__init__(Handler)

    # -- what tests call -----------------------------------------------------------------

    def fail(self, action: str, code: str, message: str = "", status: int = 400,
             times: int | None = 1, match: str | None = None, hold: float = 0.0) -> None:
        """Answer the next ``times`` calls of ``action`` (None: all, until cleared) with an error,
        ``hold`` seconds after they arrive."""
        with self._lock:
            self._faults.append(Fault(action, code, message, status, times, match, hold))

    def report_associating(self, describes: int) -> None:
        """Make new associations look ``associating`` until ``describes`` Describe calls later;
        meanwhile EC2 refuses to disassociate them (``IncorrectState``), as it does while one settles."""
        with self._lock:
            self._associating_describes = describes

    def report_pending(self, describes: int) -> None:
        """Make running instances look ``pending`` in the next ``describes`` DescribeInstances."""
        with self._lock:
            self._pending_describes = describes

    def hide_new_associations(self, seconds: float) -> None:
        """Make DescribeIamInstanceProfileAssociations miss each association that an Associate
        call makes for ``seconds`` after it was made (EC2's eventual consistency)."""
        with self._lock:
            self._hide_for = seconds

    def delay(self, action: str, seconds: float) -> None:
        """Hold every ``action`` call this long before forwarding it."""
        with self._lock:
            self._delays[action] = seconds

    def expire(self, access_key: str, at: float) -> None:
        """Refuse requests signed with ``access_key`` from ``at`` (``time.time()``) on, as AWS would."""
        with self._lock:
            self._expiry[access_key] = at

    def short_lived_sts(self, seconds: float) -> None:
        """Credentials STS hands out (AssumeRole, AssumeRoleWithWebIdentity) expire after ``seconds``."""
        with self._lock:
            self._sts_lifetime = seconds

    def signers(self, *actions: str) -> set[str]:
        """The access key IDs that signed requests of ``actions`` (all, when none is named)."""
        return {key for (action, key, _), _ in self.signed.items() if not actions or action in actions}

    def clear(self) -> None:
        with self._lock:
            self._sts_lifetime = None
            self._faults.clear()
            self._associating_describes = 0
            self._pending_describes = 0
            self._delays.clear()
            self._hide_for = 0.0
            self._hidden.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.injected.clear()
            self.bodies.clear()
            self.signed.clear()
            self.expired_refused = 0
            for keys in self.issued.values():
                keys.clear()

    def mentioning(self, text: str) -> list[str]:
        """The actions of the requests that named ``text`` (an instance or association ID)."""
        with self._lock:
            return [parse_qs(body).get("Action", ["?"])[0] for body in self.bodies if text in body]

    # -- the proxy -----------------------------------------------------------------------

    def _pick_fault(self, action: str, body: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.action == action and (fault.match is None or fault.match in body):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    self.injected[action] += 1
                    return fault
        return None

    def _rewrite(self, action: str, payload: bytes) -> bytes:
        with self._lock:
            payload = self._lag(action, payload)
            if action in _STS_ISSUING:
                keys = [issued["key"].decode() for issued in _ISSUED.finditer(payload)]
                self.issued[action].extend(keys)
                if self._sts_lifetime is None:
                    return payload
                expires = time.time() + self._sts_lifetime
                self._expiry.update(dict.fromkeys(keys, expires))
                return _EXPIRATION.sub(f"<Expiration>{iso(expires)}</Expiration>".encode(), payload)
            if action == "DescribeInstances" and self._pending_describes:
                self._pending_describes -= 1
                return re.sub(rb"(<instanceState>\s*<code>)16(</code>\s*<name>)running(</name>)", rb"\g<1>0\g<2>pending\g<3>", payload)
            if not self._associating_describes:
                return payload
            if action == "DescribeIamInstanceProfileAssociations":
                self._associating_describes -= 1
            elif action not in ("AssociateIamInstanceProfile", "ReplaceIamInstanceProfileAssociation"):
                return payload
        return re.sub(rb"<state>associated</state>", b"<state>associating</state>", payload)

    def _lag(self, action: str, payload: bytes) -> bytes:
        """Hide what ``hide_new_associations`` says (called with the lock held)."""
        now = time.monotonic()
        if action == "AssociateIamInstanceProfile" and self._hide_for:
            for association_id in re.findall(rb"<associationId>([^<]+)</associationId>", payload):
                self._hidden[association_id] = now + self._hide_for
        elif action == "DescribeIamInstanceProfileAssociations":
            for association_id, until in list(self._hidden.items()):
                if until <= now:
                    del self._hidden[association_id]
                    continue
                payload = re.sub(rb"<item>(?:(?!</item>).)*<associationId>" + re.escape(association_id) + rb"</associationId>.*?</item>",
                                 b"", payload, flags=re.S)
        return payload

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        action = parse_qs(text).get("Action", ["?"])[0]
        signer = _SIGNER.search(handler.headers.get("Authorization", ""))
        with self._lock:
            self.calls[action] += 1
            self.bodies.append(text)
            hold = self._delays.get(action, 0.0)
            expired = signer is not None and time.time() >= self._expiry.get(signer["key"], float("inf"))
            if signer is not None:
                self.signed[action, signer["key"], signer["region"]] += 1
            if expired:
                self.expired_refused += 1
        if hold:
            time.sleep(hold)
        if expired:
            message = "The security token included in the request is expired"
            respond(handler, 400, ERROR_XML.format(code="ExpiredToken", message=message).encode(), "text/xml")
            return
        fault = self._pick_fault(action, text)
        with self._lock:
            if fault is None and action == "DisassociateIamInstanceProfile" and self._associating_describes:
                self.injected[action] += 1
                fault = Fault(action, "IncorrectState", "The association is not in a valid state: associating", 400, None, None)
        if fault is not None:
            time.sleep(fault.hold)
            respond(handler, fault.status, ERROR_XML.format(code=fault.code, message=fault.message).encode(), "text/xml")
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(self.upstream + handler.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload, kind = response.status, response.read(), response.headers.get("Content-Type", "text/xml")
        except urllib.error.HTTPError as error:
            status, payload, kind = error.code, error.read(), error.headers.get("Content-Type", "text/xml")
        respond(handler, status, self._rewrite(action, payload) if status == 200 else payload, kind)
