"""Classify AWS errors into the few outcomes the operator acts on.

Each kind carries its policy: the condition reason users see, whether it is retried quietly
at first (transient faults surface only once they persist), and after how long it means the
user has to act (kstatus ``Stalled``).
"""

from __future__ import annotations

import enum
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
}

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
    "the operator has no usable AWS credentials: on EKS, give its ServiceAccount a role with IRSA "
    "(annotation eks.amazonaws.com/role-arn) or an EKS Pod Identity association; elsewhere set "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in its environment"
)


@dataclass  # not frozen: exception machinery (contextlib's __exit__) assigns __traceback__
class AwsFault(Exception):
    """An EC2 call failed; ``kind`` decides what happens next."""

    kind: FaultKind
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    @property
    def policy(self) -> Policy:
        return POLICIES[self.kind]


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
    return AwsFault(kind, code, message)


def credentials_unavailable(code: str, message: str) -> AwsFault:
    """No credentials, or ones AWS refuses to recognise: a set-up error with a known fix."""
    return AwsFault(FaultKind.CREDENTIALS_UNAVAILABLE, code, f"{message.rstrip('.')}; {CREDENTIALS_HINT}")


def unreachable(error: Exception) -> AwsFault:
    """A call that got no answer at all (connection refused, timeout)."""
    return AwsFault(FaultKind.UNAVAILABLE, type(error).__name__, str(error))
