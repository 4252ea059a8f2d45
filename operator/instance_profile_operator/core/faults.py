"""Classify AWS errors into the few outcomes the operator acts on.

Each kind carries its policy: the condition reason users see, whether it is retried quietly
at first (transient faults surface only once they persist), and after how long it means the
user has to act (kstatus ``Stalled``).

A fault's ``message`` is what tenants read in status and Events (``for_tenants``): stable from one
retry to the next and naming no principal or role ARN; its ``detail``, when that differs, is AWS's
full text, for the operator's log.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .api import Reason


class FaultKind(enum.Enum):
    INSTANCE_NOT_FOUND = "instance-not-found"
    INSTANCE_NOT_READY = "instance-not-ready"
    PROFILE_NOT_FOUND = "profile-not-found"
    ACCESS_DENIED = "access-denied"
    STALE_OBSERVATION = "stale-observation"  # the association changed under us: look again
    THROTTLED = "throttled"
    UNAVAILABLE = "unavailable"
    INVALID_REQUEST = "invalid-request"
    CREDENTIALS_UNAVAILABLE = "credentials-unavailable"  # a set-up error: no or unusable AWS credentials
    UNKNOWN_REGION = "unknown-region"  # a region the account's partition does not have: no client is made


@dataclass(frozen=True)
class Policy:
    reason: str
    quiet_attempts: int  # failed attempts in a row before the fault shows in status and Events
    stalled_after: float | None  # seconds of persistence after which only the user can fix it


POLICIES: dict[FaultKind, Policy] = {
    # New instances can be invisible for a few seconds (EC2 is eventually consistent).
    FaultKind.INSTANCE_NOT_FOUND: Policy(Reason.INSTANCE_NOT_FOUND, 0, 60.0),
    FaultKind.INSTANCE_NOT_READY: Policy(Reason.INSTANCE_NOT_READY, 0, None),
    # IAM takes up to minutes to propagate a new instance profile to EC2.
    FaultKind.PROFILE_NOT_FOUND: Policy(Reason.INSTANCE_PROFILE_NOT_FOUND, 0, 300.0),
    FaultKind.ACCESS_DENIED: Policy(Reason.ACCESS_DENIED, 0, 0.0),
    FaultKind.STALE_OBSERVATION: Policy(Reason.AWS_ERROR, 3, None),
    FaultKind.THROTTLED: Policy(Reason.THROTTLED, 3, None),
    FaultKind.UNAVAILABLE: Policy(Reason.AWS_UNAVAILABLE, 3, None),
    FaultKind.INVALID_REQUEST: Policy(Reason.AWS_ERROR, 0, 0.0),
    FaultKind.CREDENTIALS_UNAVAILABLE: Policy(Reason.CREDENTIALS_UNAVAILABLE, 0, 0.0),
    FaultKind.UNKNOWN_REGION: Policy(Reason.INVALID_SPEC, 0, 0.0),
}
# Faults of what a user wrote (an instance, profile or region that is not there, a request EC2
# refuses for its content), which the binding's status reports: the operator talked to AWS fine.
USER_FAULTS = frozenset({FaultKind.INSTANCE_NOT_FOUND, FaultKind.INSTANCE_NOT_READY, FaultKind.PROFILE_NOT_FOUND,
                         FaultKind.INVALID_REQUEST, FaultKind.UNKNOWN_REGION})


def stalled_and_next_try(policy: Policy, since: float, now: float, backoff_delay: float) -> tuple[bool, float]:
    """Whether a fault that persists since ``since`` counts as Stalled at ``now``, and when to try
    again: after ``backoff_delay``, but no later than the moment it turns Stalled, so that
    Stalled shows when the documented time has passed, not at the next retry after it."""
    if policy.stalled_after is None:
        return False, backoff_delay
    left = since + policy.stalled_after - now
    if left <= 0:
        return True, backoff_delay
    return False, min(backoff_delay, left)


CREDENTIALS_HINT = (
    "the operator has no usable AWS credentials (botocore looked for environment keys, IRSA, a shared config "
    "profile, a container credentials endpoint and EC2 instance metadata, and found none): on EKS, give its "
    "ServiceAccount a role with IRSA (annotation eks.amazonaws.com/role-arn) or an EKS Pod Identity association; "
    "elsewhere set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in its environment"
)


@dataclass(frozen=True)
class CredentialSource:
    """One of botocore's credential providers, as users configure it."""

    name: str
    check: str  # what to look at when it fails


# By botocore's provider METHOD names.
CREDENTIAL_SOURCES: dict[str, CredentialSource] = {
    "env": CredentialSource(
        "static keys from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
        "that the keys are current: those of a deleted user, or an expired AWS_SESSION_TOKEN, are refused"),
    "assume-role-with-web-identity": CredentialSource(
        "IRSA (the role AWS_ROLE_ARN, assumed with the token file AWS_WEB_IDENTITY_TOKEN_FILE)",
        "the ServiceAccount's eks.amazonaws.com/role-arn annotation (pods restarted since it changed), that the "
        "token file is mounted, and that the role's trust policy allows the cluster's OIDC provider for "
        "system:serviceaccount:NAMESPACE:SERVICEACCOUNT with sts:AssumeRoleWithWebIdentity"),
    "container-role": CredentialSource(
        "EKS Pod Identity (the container credentials endpoint AWS_CONTAINER_CREDENTIALS_FULL_URI)",
        "that the eks-pod-identity-agent add-on runs on the node, that a pod identity association names the "
        "operator's namespace and ServiceAccount, and that its token file AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE is mounted"),
    "iam-role": CredentialSource(
        "the node's instance role (EC2 instance metadata, IMDS)",
        "that the node has an instance profile and that IMDSv2's hop limit lets pods reach it (2 or more)"),
    "assume-role": CredentialSource(
        "the role_arn of the shared config profile (AWS_PROFILE)",
        "the credentials of its source_profile or credential_source, and that the role's trust policy allows them"),
    "custom-process": CredentialSource(
        "the credential_process of the shared config profile (AWS_PROFILE)",
        "that the command runs in the operator's container and prints credentials as JSON (Version 1)"),
    "shared-credentials-file": CredentialSource(
        "keys from the shared credentials file (AWS_SHARED_CREDENTIALS_FILE)", "that the keys are current"),
    "config-file": CredentialSource("keys from the shared config file (AWS_CONFIG_FILE)", "that the keys are current"),
    "sso": CredentialSource("the IAM Identity Center (SSO) profile (AWS_PROFILE)", "that its sign-in is current (aws sso login)"),
}


@dataclass  # not frozen: exception machinery (contextlib's __exit__) assigns __traceback__
class AwsFault(Exception):
    """An AWS call failed; ``kind`` decides what happens next. ``message`` is for tenants (status,
    Events), ``detail`` AWS's full text when ``message`` withholds some of it (for the log)."""

    kind: FaultKind
    code: str
    message: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    @property
    def policy(self) -> Policy:
        return POLICIES[self.kind]


def fault(kind: FaultKind, code: str, text: str) -> AwsFault:
    """A fault whose message is ``text`` as tenants may read it."""
    message = for_tenants(text)
    return AwsFault(kind, code, message, text if message != text else "")


_ENCODED = re.compile(r"Encoded authorization failure message: [A-Za-z0-9_+/=-]+")
_PRINCIPAL = re.compile(
    r"arn:aws(?:-[a-z]+)*:(?:iam|sts)::[0-9]{12}:(?:(?P<role>role/)|assumed-role/|user/|federated-user/|group/|root)"
    r"(?:[\w+=,.@/-]*[\w+=,@/-])?")
DECODE_HINT = (
    "Encoded authorization failure message: withheld, in the operator's log "
    "(decode it with aws sts decode-authorization-message --encoded-message MESSAGE)"
)
WITHHELD = " (ARNs withheld: the operator's log has the full message)"


def for_tenants(message: str) -> str:
    """``message`` as the status of a tenant's binding may show it: EC2's encoded authorization
    message, which differs on every call, cut with a word on how to decode it, and every principal
    ARN (the operator's, an assumed role's) and role ARN (another account's) withheld."""
    shaped = _ENCODED.sub(DECODE_HINT, message)
    shaped, withheld = _PRINCIPAL.subn(lambda match: "<role>" if match["role"] else "<principal>", shaped)
    return shaped + WITHHELD if withheld else shaped


_BY_CODE: dict[str, FaultKind] = {
    "InvalidInstanceID.NotFound": FaultKind.INSTANCE_NOT_FOUND,
    "InvalidInstanceID.Malformed": FaultKind.INSTANCE_NOT_FOUND,
    "InvalidInstanceID": FaultKind.INSTANCE_NOT_FOUND,
    "IncorrectInstanceState": FaultKind.INSTANCE_NOT_READY,
    "NoSuchEntity": FaultKind.PROFILE_NOT_FOUND,
    "InstanceIdentityProfileNotFound": FaultKind.PROFILE_NOT_FOUND,
    "UnauthorizedOperation": FaultKind.ACCESS_DENIED,
    "AccessDenied": FaultKind.ACCESS_DENIED,
    "AccessDeniedException": FaultKind.ACCESS_DENIED,
    "AuthFailure": FaultKind.ACCESS_DENIED,
    "InvalidClientTokenId": FaultKind.CREDENTIALS_UNAVAILABLE,
    "UnrecognizedClientException": FaultKind.CREDENTIALS_UNAVAILABLE,
    "SignatureDoesNotMatch": FaultKind.CREDENTIALS_UNAVAILABLE,
    "ExpiredToken": FaultKind.CREDENTIALS_UNAVAILABLE,
    "ExpiredTokenException": FaultKind.CREDENTIALS_UNAVAILABLE,
    "InvalidIdentityToken": FaultKind.CREDENTIALS_UNAVAILABLE,
    "IDPCommunicationError": FaultKind.CREDENTIALS_UNAVAILABLE,
    "IDPRejectedClaim": FaultKind.CREDENTIALS_UNAVAILABLE,
    "InvalidAssociationID.NotFound": FaultKind.STALE_OBSERVATION,
    "RequestLimitExceeded": FaultKind.THROTTLED,
    "Throttling": FaultKind.THROTTLED,
    "ThrottlingException": FaultKind.THROTTLED,
    "RequestThrottled": FaultKind.THROTTLED,
    "TooManyRequestsException": FaultKind.THROTTLED,
    "SlowDown": FaultKind.THROTTLED,
    "InternalError": FaultKind.UNAVAILABLE,
    "InternalFailure": FaultKind.UNAVAILABLE,
    "ServiceUnavailable": FaultKind.UNAVAILABLE,
    "Unavailable": FaultKind.UNAVAILABLE,
    "RequestTimeout": FaultKind.UNAVAILABLE,
    "RequestTimeoutException": FaultKind.UNAVAILABLE,
}


# STS calls that botocore makes on its own to obtain the operator's credentials (IRSA).
_CREDENTIAL_OPERATIONS = frozenset({"AssumeRoleWithWebIdentity", "AssumeRoleWithSAML", "GetRoleCredentials"})


def classify(code: str, message: str, http_status: int | None = None, operation: str | None = None) -> AwsFault:
    """Map an AWS error code and message (and HTTP status, and the failed operation) to a fault."""
    text = message.lower()
    kind = FaultKind.CREDENTIALS_UNAVAILABLE if operation in _CREDENTIAL_OPERATIONS else _BY_CODE.get(code)
    if kind is FaultKind.CREDENTIALS_UNAVAILABLE:
        return credentials_unavailable(code, message)
    if kind is None:
        if code == "InvalidParameterValue" and "iam instance profile" in text:
            kind = FaultKind.PROFILE_NOT_FOUND
        elif code == "IncorrectState":
            # "There is an existing association for instance …" or "… is not in a valid state":
            # EC2 moved on since we looked; an instance-profile message means IAM has not propagated.
            kind = FaultKind.PROFILE_NOT_FOUND if "profile" in text and "association" not in text else FaultKind.STALE_OBSERVATION
        elif http_status == 429:
            kind = FaultKind.THROTTLED
        elif http_status is not None and http_status >= 500:
            kind = FaultKind.UNAVAILABLE
        else:
            kind = FaultKind.INVALID_REQUEST
    return fault(kind, code, message)


def credentials_unavailable(code: str, message: str, method: str | None = None) -> AwsFault:
    """No credentials, or ones their source or AWS refuses: a set-up error. With the botocore
    provider ``method`` that failed, the message names that source and what to check."""
    if method is None:
        return fault(FaultKind.CREDENTIALS_UNAVAILABLE, code, f"{message.rstrip('.')}; {CREDENTIALS_HINT}")
    source = CREDENTIAL_SOURCES.get(method, CredentialSource(f"botocore's {method} credentials", "that source's configuration"))
    return fault(FaultKind.CREDENTIALS_UNAVAILABLE, code, f"{source.name} failed: {message.rstrip('.')}; check {source.check}")


def unreachable(error: Exception) -> AwsFault:
    """A call that got no answer at all (connection refused, timeout)."""
    return fault(FaultKind.UNAVAILABLE, type(error).__name__, str(error))
