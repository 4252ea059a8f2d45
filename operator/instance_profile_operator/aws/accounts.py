"""AWS credentials and clients per account: the operator's own credentials, or a role assumed with STS.

Two kinds of botocore session, kept apart on purpose:

* the **credentials session** is botocore's own and stays as botocore makes it. Its provider
  chain finds the operator's credentials (environment keys, IRSA, a shared config profile with
  ``role_arn`` or ``credential_process``, SSO, EKS Pod Identity or ECS, EC2 instance metadata)
  and refreshes them, making whatever clients it needs (STS ``AssumeRoleWithWebIdentity``,
  SSO, ...) from botocore's whole API models.
* **client sessions**, one per account, make the operator's own clients (EC2 per region, STS for
  the roles policies name) from one shared ``apimodel.TrimmedLoader``: only the operations the
  operator calls. They are handed their credentials ready-made: the credentials session's, or a
  role's assumed with STS.

So trimming never removes an operation a credential provider calls, whichever providers botocore
adds (docs/design.md).

An assumed role's credentials are botocore refreshable credentials: fetched on first use,
cached, and refreshed 15 minutes before they expire (botocore's advisory window; a failed
refresh then keeps the old credentials until 10 minutes before expiry). A role's session is made
per ``Account``, role ARN *and* external ID: a policy's new external ID makes a new session, and
``retain`` drops those nobody uses any more.

Every failure to get credentials, wherever botocore meets it (resolving its chain, refreshing,
assuming a role), is an ``AwsFault``: ``CREDENTIALS_UNAVAILABLE`` naming the source botocore used
and what to check, ``ACCESS_DENIED`` for a policy's role STS will not let the operator assume,
``THROTTLED``/``UNAVAILABLE`` for what retrying fixes. A client is made only once its
credentials are at hand: botocore would otherwise make one that can never sign.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Collection

import boto3
import botocore
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.session

from ..core.api import COMPONENT
from ..core.faults import AwsFault, FaultKind, classify, credentials_unavailable, fault, unreachable
from ..core.model import OWN_ACCOUNT, Account
from .apimodel import TrimmedLoader

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
    return fault(kind if kind in _RETRIED else FaultKind.ACCESS_DENIED, code, f"cannot assume role {role_arn}: {message}")


def credentials_fault(method: str | None, error: Exception) -> AwsFault:
    """What a credential provider's failure means: STS throttling or failing is retried like any
    AWS call; anything else (a missing token file, a refused token, an endpoint that does not
    answer) is a set-up error of the source ``method`` names."""
    if isinstance(error, AwsFault):
        return error
    if isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        code, message = details.get("Code", "Unknown"), details.get("Message", "")
        kind = classify(code, message, error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")).kind
        if kind in _RETRIED:
            return fault(kind, code, f"{error.operation_name}: {message}")
        return credentials_unavailable(code, message, method)
    return credentials_unavailable(type(error).__name__, str(error), method)


def failing_provider(error: BaseException) -> str | None:
    """The METHOD of the outermost botocore credential provider ``error`` was raised in: the
    source of the chain that failed (a role_arn profile's, say, not its source_profile's)."""
    for frame, _ in traceback.walk_tb(error.__traceback__):
        provider = frame.f_locals.get("self")
        if isinstance(provider, botocore.credentials.CredentialProvider):
            return provider.METHOD
    return None


class RefreshFailureLog(logging.Filter):
    """botocore logs a failed credential refresh with its traceback. A mandatory refresh raises
    as well, and the operator reports that where it surfaces (status, Event, one log line): the
    record goes. An advisory one keeps the current credentials: one line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not (record.exc_info and message.startswith("Refreshing temporary credentials failed")):
            return True
        if "mandatory" in message:
            return False
        error = record.exc_info[1]
        record.msg, record.args = f"{message} Keeping the current credentials: {type(error).__name__}: {error}", ()
        record.exc_info = record.exc_text = None
        return True


class _GivenProvider(botocore.credentials.CredentialProvider):
    """Hands a client session credentials found elsewhere, instead of its own provider chain."""

    METHOD = "operator-given"

    def __init__(self, find: Callable[[], botocore.credentials.Credentials]):
        super().__init__()
        self._find = find

    def load(self) -> botocore.credentials.Credentials:
        return self._find()


class Accounts:
    """The credentials of each account, and the clients that act in it."""

    def __init__(self, base: boto3.Session | None = None, region: str | None = None,
                 role_session_name: str | None = None, duration_seconds: int = 3600):
        base = base or boto3.Session(region_name=region)
        self.credentials_session: botocore.session.Session = base._session  # botocore's own: nothing registered on it
        self._loader = TrimmedLoader(self.credentials_session.get_component("data_loader").search_paths)
        self._region = region or base.region_name
        self._session_name = role_session_name or session_name(operator_identity())
        self._duration = duration_seconds
        self._roles: dict[Account, botocore.credentials.Credentials] = {}
        self._sessions: dict[Account, boto3.Session] = {}
        self._sts: Any = None  # made on first use: an operator acting in its own account never needs it
        self._partitions: dict[str, frozenset[str]] = {}
        self._lock = threading.RLock()  # botocore sessions are not thread-safe; clients are

    # -- credentials -------------------------------------------------------------------------

    def _source(self, account: Account) -> botocore.credentials.Credentials:
        """The account's credentials object, found or made without any AWS call where it can be."""
        with self._lock:
            if account.role_arn:
                if account not in self._roles:
                    self._roles[account] = botocore.credentials.DeferredRefreshableCredentials(
                        refresh_using=lambda: self._assume(account), method="sts-assume-role")
                return self._roles[account]
            try:
                found = self.credentials_session.get_credentials()  # botocore keeps what it found
            except Exception as error:  # whatever a provider raises: its source is named, never a traceback
                raise credentials_fault(failing_provider(error), error) from None
        if found is None:
            raise credentials_unavailable("NoCredentialsError", "Unable to locate credentials")
        return found

    def credentials(self, account: Account) -> botocore.credentials.ReadOnlyCredentials:
        """The account's credentials, refreshed first when they are about to expire; ``AwsFault``
        when they cannot be had."""
        source = self._source(account)
        try:
            return source.get_frozen_credentials()
        except Exception as error:
            raise credentials_fault(source.method, error) from None

    def _assume(self, account: Account) -> dict[str, Any]:
        """Called by botocore, under the credentials' own lock, when they are missing or expiring."""
        self.credentials(OWN_ACCOUNT)  # the operator's own first: their failure is theirs, not the role's
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

    def _sts_client(self) -> Any:
        with self._lock:
            if self._sts is None:
                self._sts = self.session(OWN_ACCOUNT).client("sts", region_name=self._region, config=botocore.config.Config(
                    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10,
                    user_agent_extra=COMPONENT,
                ))
            return self._sts

    # -- clients -----------------------------------------------------------------------------

    def session(self, account: Account) -> boto3.Session:
        """The client session acting in ``account``: the trimmed API models, the account's
        credentials; no AWS call happens here."""
        with self._lock:
            if account not in self._sessions:
                core = botocore.session.Session()
                # One loader for all accounts: each would otherwise parse EC2's API model again.
                core.register_component("data_loader", self._loader)
                core.register_component("credential_provider", botocore.credentials.CredentialResolver(
                    [_GivenProvider(lambda: self._source(account))]))
                self._sessions[account] = boto3.Session(botocore_session=core, region_name=self._region)
            return self._sessions[account]

    def client(self, account: Account, service: str, region: str, config: botocore.config.Config) -> Any:
        """A new client of ``service`` in ``region`` acting in ``account``, once its credentials are
        at hand; ``AwsFault`` when they cannot be had or the region does not exist."""
        self.check_region(account, region)
        self.credentials(account)
        with self._lock:
            return self.session(account).client(service, region_name=region, config=config)

    def retain(self, accounts: Collection[Account]) -> None:
        """Forget the sessions and credentials of roles not in ``accounts``."""
        with self._lock:
            for account in [a for a in self._sessions if a.role_arn and a not in accounts]:
                del self._sessions[account]
            for account in [a for a in self._roles if a not in accounts]:
                del self._roles[account]

    # -- regions -----------------------------------------------------------------------------

    def check_region(self, account: Account, region: str) -> None:
        """``UNKNOWN_REGION`` for a region the account's partition does not have, as botocore's
        endpoint data lists them (the CRD takes any name shaped like a region)."""
        partition = self._partition(account)
        if region not in self._regions(partition):
            raise fault(FaultKind.UNKNOWN_REGION, "UnknownRegion", (
                f"region {region} is not a region of the AWS partition {partition} (botocore {botocore.__version__}); "
                "fix spec.region, or, for a region AWS opened since, upgrade the operator"))

    def _partition(self, account: Account) -> str:
        if account.role_arn:
            return account.role_arn.split(":")[1]
        return next((name for name, regions in self._all_regions().items() if self._region in regions), "aws")

    def _regions(self, partition: str) -> frozenset[str]:
        return self._all_regions().get(partition, frozenset())

    def _all_regions(self) -> dict[str, frozenset[str]]:
        if not self._partitions:
            self._partitions = {p["partition"]: frozenset(p["regions"]) for p in self._loader.load_data("endpoints")["partitions"]}
        return self._partitions
