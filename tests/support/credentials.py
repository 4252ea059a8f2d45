"""Local stand-ins for the credential endpoints the operator meets on AWS, on 127.0.0.1.

* ``ContainerCredentials``: EKS Pod Identity's (and ECS's) container credentials endpoint
  (``AWS_CONTAINER_CREDENTIALS_FULL_URI``), which answers only requests carrying the pod's
  token in ``Authorization``.
* ``InstanceMetadata``: IMDSv2 (``AWS_EC2_METADATA_SERVICE_ENDPOINT``): a session token first
  (``PUT /latest/api/token``), then the role and its credentials, only with that token.

Both hand out fresh keys (``issued``), valid for ``lifetime`` seconds, and say so to ``expire``
(the fault proxy's, which then refuses requests signed with them once they have expired).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Callable

from .localserver import LocalServer, QuietHandler, respond

IMDS_TOKEN_PATH = "/latest/api/token"
IMDS_ROLE_PATH = "/latest/meta-data/iam/security-credentials/"


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Endpoint(LocalServer):
    """A server that mints credentials; subclasses answer requests."""

    prefix = "ASIA"

    def __init__(self, lifetime: float = 3600.0, expire: Callable[[str, float], None] = lambda key, at: None):
        self.lifetime = lifetime
        self.expire = expire
        self.issued: list[str] = []
        self.refused = 0
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        endpoint = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                endpoint._answer(self, "GET")

            def do_PUT(self) -> None:  # noqa: N802
                endpoint._answer(self, "PUT")

        super().__init__(Handler)

    def _mint(self) -> dict[str, str]:
        with self._lock:
            key = f"{self.prefix}{next(self._serial):016d}"
            self.issued.append(key)
        expires = time.time() + self.lifetime
        self.expire(key, expires)
        return {"AccessKeyId": key, "SecretAccessKey": f"secret-{key}", "Token": f"token-{key}", "Expiration": iso(expires)}

    def _refuse(self, handler: BaseHTTPRequestHandler, status: int) -> None:
        with self._lock:
            self.refused += 1
        respond(handler, status, b"refused", "text/plain")

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        raise NotImplementedError


class ContainerCredentials(_Endpoint):
    """Answers ``GET /v1/credentials`` carrying ``Authorization: <token>``; 401 otherwise."""

    prefix = "ASIAPODIDENTITY"

    def __init__(self, token: str, **kwargs):
        super().__init__(**kwargs)
        self.token = token

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        if method != "GET" or handler.headers.get("Authorization") != self.token:
            self._refuse(handler, 401)
            return
        respond(handler, 200, json.dumps({**self._mint(), "AccountId": "123456789012"}).encode(), "application/json")


class InstanceMetadata(_Endpoint):
    """IMDSv2 with one role: every GET needs the session token a PUT handed out (401 otherwise)."""

    prefix = "ASIAINSTANCEROLE"
    role = "node-role"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.session_token = "imds-session-token"
        self.tokens_handed_out = 0

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        if method == "PUT" and handler.path == IMDS_TOKEN_PATH and handler.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            with self._lock:
                self.tokens_handed_out += 1
            respond(handler, 200, self.session_token.encode(), "text/plain")
        elif method != "GET" or handler.headers.get("X-aws-ec2-metadata-token") != self.session_token:
            self._refuse(handler, 401)
        elif handler.path == IMDS_ROLE_PATH:
            respond(handler, 200, self.role.encode(), "text/plain")
        elif handler.path == IMDS_ROLE_PATH + self.role:
            body = {"Code": "Success", "LastUpdated": iso(time.time()), "Type": "AWS-HMAC", **self._mint()}
            respond(handler, 200, json.dumps(body).encode(), "application/json")
        else:
            self._refuse(handler, 404)
