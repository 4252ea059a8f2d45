"""AWS sessions per account: the operator's own credentials, or a role assumed with STS.

An assumed role's credentials are botocore refreshable credentials: fetched on first use,
cached, and refreshed 15 minutes before they expire (botocore's advisory window; a failed
refresh then keeps the old credentials until 10 minutes before expiry). A failure to assume
surfaces from the first AWS call that needs the credentials as a classified ``AwsFault``:
``ACCESS_DENIED`` with the STS message, or ``THROTTLED``/``UNAVAILABLE`` for what retrying fixes.
With ``AWS_ENDPOINT_URL`` set, STS is asked there too (moto in the development environment).
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.session

from .api import COMPONENT
from .apimodel import TrimmedLoader
from .faults import AwsFault, FaultKind, classify, unreachable
from .model import Account

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_SESSION_NAME_LIMIT = 64
_RETRIED = (FaultKind.THROTTLED, FaultKind.UNAVAILABLE)


def session_name(identity: str) -> str:
    """A RoleSessionName naming the operator (and its namespace or host): at most 64 of the
    characters STS allows. CloudTrail in the role's account shows it."""
    name = f"{COMPONENT}-{identity}" if identity else COMPONENT
    return re.sub(r"[^A-Za-z0-9+=,.@_-]", "-", name)[:_SESSION_NAME_LIMIT]


def operator_identity() -> str:
    """The operator's namespace in a cluster, else the host's name."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return socket.gethostname()


def assume_fault(role_arn: str, code: str, message: str, http_status: int | None = None) -> AwsFault:
    """A failed AssumeRole: retried when AWS is throttling or failing, else the user must fix the
    role's trust policy or the policy's roleArn/externalId."""
    kind = classify(code, message, http_status).kind
    return AwsFault(kind if kind in _RETRIED else FaultKind.ACCESS_DENIED, code, f"cannot assume role {role_arn}: {message}")


class _FixedProvider(botocore.credentials.CredentialProvider):
    """Hands botocore the credentials object we built, instead of its provider chain."""

    METHOD = "sts-assume-role"

    def __init__(self, credentials: botocore.credentials.Credentials):
        super().__init__()
        self._credentials = credentials

    def load(self) -> botocore.credentials.Credentials:
        return self._credentials


class Accounts:
    """One boto3 Session per account, created once and kept; the gateway makes its clients from them."""

    def __init__(self, base: boto3.Session | None = None, region: str | None = None,
                 role_session_name: str | None = None, duration_seconds: int = 3600):
        self._base = base or boto3.Session(region_name=region)
        loader = self._base._session.get_component("data_loader")
        self._base._session.register_component("data_loader", TrimmedLoader(loader.search_paths))
        self._region = region or self._base.region_name
        self._session_name = role_session_name or session_name(operator_identity())
        self._duration = duration_seconds
        self._sessions: dict[Account, boto3.Session] = {}
        self._sts: Any = None  # made on first use: an operator acting in its own account never needs it
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    def session(self, account: Account) -> boto3.Session:
        """The session acting in ``account``; no AWS call happens here."""
        if not account.role_arn:
            return self._base
        with self._lock:
            if account not in self._sessions:
                self._sessions[account] = self._assumed(account)
            return self._sessions[account]

    def _assumed(self, account: Account) -> boto3.Session:
        credentials = botocore.credentials.DeferredRefreshableCredentials(
            refresh_using=lambda: self._assume(account), method=_FixedProvider.METHOD,
        )
        core = botocore.session.Session()
        core.register_component("credential_provider", botocore.credentials.CredentialResolver([_FixedProvider(credentials)]))
        # One loader for all accounts: each would otherwise parse EC2's API model again.
        core.register_component("data_loader", self._base._session.get_component("data_loader"))
        return boto3.Session(botocore_session=core, region_name=self._region)

    def _sts_client(self) -> Any:
        with self._lock:
            if self._sts is None:
                self._sts = self._base.client("sts", region_name=self._region, config=botocore.config.Config(
                    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10,
                    user_agent_extra=COMPONENT,
                ))
            return self._sts

    def _assume(self, account: Account) -> dict[str, Any]:
        """Called by botocore, under the credentials' own lock, when they are missing or expiring."""
        params: dict[str, Any] = {"RoleArn": account.role_arn, "RoleSessionName": self._session_name, "DurationSeconds": self._duration}
        if account.external_id:
            params["ExternalId"] = account.external_id
        try:
            issued = self._sts_client().assume_role(**params)["Credentials"]
        except botocore.exceptions.ClientError as error:
            details = error.response.get("Error", {})
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise assume_fault(account.role_arn, details.get("Code", "Unknown"), details.get("Message", ""), status) from None
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            raise unreachable(error) from None
        return {
            "access_key": issued["AccessKeyId"],
            "secret_key": issued["SecretAccessKey"],
            "token": issued["SessionToken"],
            "expiry_time": issued["Expiration"].isoformat(),
        }
