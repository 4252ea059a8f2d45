"""classify(): AWS errors -> the few fault kinds the operator acts on, and their policies."""

from __future__ import annotations

import pytest

from instance_profile_operator.core.api import Reason
from instance_profile_operator.core.faults import (
    CREDENTIAL_SOURCES, DECODE_HINT, POLICIES, WITHHELD, FaultKind, Policy, classify, credentials_unavailable, for_tenants,
    stalled_and_next_try, unreachable,
)

K = FaultKind

CASES = [
    # (code, message, http status, expected kind)
    pytest.param("InvalidInstanceID.NotFound", "The instance ID 'i-0123456789abcdef0' does not exist", 400,
                 K.INSTANCE_NOT_FOUND, id="instance-not-found"),
    pytest.param("InvalidInstanceID.Malformed", 'Invalid id: "i-nope" (expecting "i-...")', 400,
                 K.INSTANCE_NOT_FOUND, id="instance-id-malformed"),
    pytest.param("IncorrectInstanceState",
                 "The instance 'i-0123456789abcdef0' is not in a state from which it can be associated.", 400,
                 K.INSTANCE_NOT_READY, id="incorrect-instance-state"),
    pytest.param("InvalidParameterValue",
                 "Value (nope) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
                 400, K.PROFILE_NOT_FOUND, id="invalid-profile-name"),
    pytest.param("InvalidParameterValue",
                 "Value (arn:aws:iam::123456789012:instance-profile/nope) for parameter iamInstanceProfile.arn is "
                 "invalid. Invalid IAM Instance Profile ARN",
                 400, K.PROFILE_NOT_FOUND, id="invalid-profile-arn"),
    pytest.param("InvalidParameterValue", "Value (foo) for parameter associationId is invalid.", 400,
                 K.INVALID_REQUEST, id="invalid-parameter-other"),
    pytest.param("NoSuchEntity", "Instance Profile nope cannot be found.", 404,
                 K.PROFILE_NOT_FOUND, id="no-such-entity"),
    pytest.param("IncorrectState",
                 "There is an existing association for instance i-0123456789abcdef0", 400,
                 K.STALE_OBSERVATION, id="existing-association"),
    pytest.param("IncorrectState",
                 "There is an existing association for instance i-0123456789abcdef0 with instance profile web", 400,
                 K.STALE_OBSERVATION, id="existing-association-naming-profile"),
    pytest.param("IncorrectState",
                 "The instance profile arn:aws:iam::123456789012:instance-profile/web is not in a valid state", 400,
                 K.PROFILE_NOT_FOUND, id="profile-not-propagated"),
    pytest.param("IncorrectState", "The instance i-0123456789abcdef0 is not in a valid state", 400,
                 K.STALE_OBSERVATION, id="incorrect-state-other"),
    pytest.param("UnauthorizedOperation",
                 "You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/op/x "
                 "is not authorized to perform: iam:PassRole on resource: arn:aws:iam::123456789012:role/web",
                 403, K.ACCESS_DENIED, id="pass-role-denied"),
    pytest.param("AuthFailure", "AWS was not able to validate the provided access credentials", 401,
                 K.ACCESS_DENIED, id="auth-failure"),
    pytest.param("RequestLimitExceeded", "Request limit exceeded.", 503, K.THROTTLED, id="request-limit-exceeded"),
    pytest.param("Throttling", "Rate exceeded", 400, K.THROTTLED, id="throttling"),
    pytest.param("InternalError", "An internal error has occurred", 500, K.UNAVAILABLE, id="internal-error"),
    pytest.param("ServiceUnavailable", "Service Unavailable", 503, K.UNAVAILABLE, id="service-unavailable"),
    pytest.param("SomethingNew", "", 503, K.UNAVAILABLE, id="unknown-code-503"),
    pytest.param("SomethingNew", "", 500, K.UNAVAILABLE, id="unknown-code-500"),
    pytest.param("SomethingNew", "", 429, K.THROTTLED, id="unknown-code-429"),
    pytest.param("SomethingNew", "", 400, K.INVALID_REQUEST, id="unknown-code-400"),
    pytest.param("SomethingNew", "", None, K.INVALID_REQUEST, id="unknown-code-no-status"),
    pytest.param("InvalidAssociationID.NotFound", "The association ID 'iip-assoc-1' does not exist", 400,
                 K.STALE_OBSERVATION, id="association-not-found"),
]


@pytest.mark.parametrize(("code", "message", "status", "kind"), CASES)
def test_classify(code, message, status, kind):
    fault = classify(code, message, status)
    assert fault.kind is kind
    assert fault.code == code
    assert fault.message == for_tenants(message) and fault.detail in ("", message)


def test_known_code_wins_over_http_status():
    # RequestLimitExceeded comes back as HTTP 503: still throttling, not unavailability.
    assert classify("RequestLimitExceeded", "Request limit exceeded.", 503).kind is K.THROTTLED
    assert classify("InvalidInstanceID.NotFound", "", 500).kind is K.INSTANCE_NOT_FOUND


def test_fault_is_an_exception_with_readable_text():
    fault = classify("Throttling", "Rate exceeded", 400)
    assert isinstance(fault, Exception)
    assert str(fault) == "Throttling: Rate exceeded"
    assert str(classify("Throttling", "", 400)) == "Throttling"
    assert fault.policy == POLICIES[K.THROTTLED]


def test_unreachable_is_unavailable():
    fault = unreachable(ConnectionRefusedError("connection refused"))
    assert fault.kind is K.UNAVAILABLE
    assert fault.code == "ConnectionRefusedError"
    assert "connection refused" in str(fault)


@pytest.mark.parametrize("kind", list(FaultKind), ids=lambda k: k.value)
def test_every_kind_has_a_policy(kind):
    policy = POLICIES[kind]
    assert policy.reason  # a CamelCase reason users see
    assert policy.reason[0].isupper()
    assert policy.quiet_attempts >= 0


@pytest.mark.parametrize("kind", [K.THROTTLED, K.UNAVAILABLE], ids=lambda k: k.value)
def test_transient_faults_are_quiet_at_first_and_never_stall(kind):
    assert POLICIES[kind].quiet_attempts > 0
    assert POLICIES[kind].stalled_after is None


def test_access_denied_stalls_at_once_and_loudly():
    policy = POLICIES[K.ACCESS_DENIED]
    assert policy.stalled_after == 0.0
    assert policy.quiet_attempts == 0
    assert policy.reason == Reason.ACCESS_DENIED


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (K.INSTANCE_NOT_FOUND, Reason.INSTANCE_NOT_FOUND),
        (K.PROFILE_NOT_FOUND, Reason.INSTANCE_PROFILE_NOT_FOUND),
        (K.THROTTLED, Reason.THROTTLED),
        (K.UNAVAILABLE, Reason.AWS_UNAVAILABLE),
    ],
    ids=lambda v: getattr(v, "value", v),
)
def test_policy_reasons(kind, reason):
    assert POLICIES[kind].reason == reason



@pytest.mark.parametrize(("code", "operation"), [
    ("InvalidClientTokenId", "AssociateIamInstanceProfile"),  # an access key AWS does not know
    ("SignatureDoesNotMatch", "AssociateIamInstanceProfile"),  # the wrong secret
    ("ExpiredToken", "DescribeIamInstanceProfileAssociations"),
    ("ExpiredTokenException", "DescribeIamInstanceProfileAssociations"),
    ("InvalidIdentityToken", "AssumeRoleWithWebIdentity"),  # IRSA: a token STS refuses
    ("AccessDenied", "AssumeRoleWithWebIdentity"),  # IRSA: the role's trust policy does not name the ServiceAccount
    ("IDPCommunicationError", "AssumeRoleWithWebIdentity"),
])
def test_unusable_credentials_are_a_set_up_error_naming_the_fix(code, operation):
    fault = classify(code, "The security token included in the request is invalid.", 403, operation)
    assert fault.kind is K.CREDENTIALS_UNAVAILABLE and fault.code == code
    assert "The security token included in the request is invalid" in fault.message
    for fix in ("IRSA", "eks.amazonaws.com/role-arn", "Pod Identity", "AWS_ACCESS_KEY_ID"):
        assert fix in fault.message


def test_access_denied_of_an_ec2_call_is_not_a_credentials_problem():
    assert classify("AccessDenied", "not authorized", 403, "AssociateIamInstanceProfile").kind is K.ACCESS_DENIED


def test_no_credentials_stalls_at_once_with_its_own_reason():
    fault = credentials_unavailable("NoCredentialsError", "Unable to locate credentials")
    assert str(fault).startswith("NoCredentialsError: Unable to locate credentials; the operator has no usable AWS credentials")
    policy = POLICIES[K.CREDENTIALS_UNAVAILABLE]
    assert (policy.reason, policy.quiet_attempts, policy.stalled_after) == (Reason.CREDENTIALS_UNAVAILABLE, 0, 0.0)


@pytest.mark.parametrize(("stalled_after", "since", "now", "backoff_delay", "expected"), [
    (None, 0.0, 1000.0, 8.0, (False, 8.0)),  # transient: never stalls, plain backoff
    (60.0, 0.0, 10.0, 8.0, (False, 8.0)),  # far from the deadline: plain backoff
    (60.0, 0.0, 55.0, 16.0, (False, 5.0)),  # the next try lands on the deadline, not 11 s after it
    (60.0, 0.0, 60.0, 16.0, (True, 16.0)),  # on the deadline: Stalled
    (300.0, 0.0, 299.5, 300.0, (False, 0.5)),
    (0.0, 5.0, 5.0, 2.0, (True, 2.0)),  # stalls at once
])
def test_stalled_shows_when_the_stated_time_has_passed(stalled_after, since, now, backoff_delay, expected):
    policy = Policy(Reason.INSTANCE_NOT_FOUND, 0, stalled_after)
    assert stalled_and_next_try(policy, since, now, backoff_delay) == expected


# -- what tenants read ---------------------------------------------------------------------------

BLOB = "AbC-12_x/y+z=" * 40
OPERATOR = "arn:aws:sts::111122223333:assumed-role/instance-profile-operator/instance-profile-operator-ipo"
OTHER_ROLE = "arn:aws:iam::222233334444:role/teams/team-b"


@pytest.mark.parametrize(("message", "shown"), [
    pytest.param("Request limit exceeded.", "Request limit exceeded.", id="nothing-to-withhold"),
    pytest.param("", "", id="empty"),
    pytest.param(f"You are not authorized to perform this operation. Encoded authorization failure message: {BLOB}",
                 f"You are not authorized to perform this operation. {DECODE_HINT}", id="encoded-message"),
    pytest.param(f"You are not authorized to perform this operation. User: {OPERATOR} is not authorized to perform: "
                 "ec2:AssociateIamInstanceProfile on resource: arn:aws:ec2:us-east-1:111122223333:instance/i-0abc because no "
                 f"identity-based policy allows the ec2:AssociateIamInstanceProfile action. Encoded authorization failure message: {BLOB}",
                 "You are not authorized to perform this operation. User: <principal> is not authorized to perform: "
                 "ec2:AssociateIamInstanceProfile on resource: arn:aws:ec2:us-east-1:111122223333:instance/i-0abc because no "
                 f"identity-based policy allows the ec2:AssociateIamInstanceProfile action. {DECODE_HINT}{WITHHELD}",
                 id="ec2-unauthorized-with-principal-and-blob"),
    pytest.param(f"User: {OPERATOR} is not authorized to perform: sts:AssumeRole on resource: {OTHER_ROLE}",
                 f"User: <principal> is not authorized to perform: sts:AssumeRole on resource: <role>{WITHHELD}", id="sts-denial"),
    pytest.param(f"User: {OPERATOR} is not authorized to perform: sts:AssumeRole on resource: {OTHER_ROLE}.",
                 f"User: <principal> is not authorized to perform: sts:AssumeRole on resource: <role>.{WITHHELD}",
                 id="sentence-ends-after-the-arn"),
    pytest.param("User: arn:aws:iam::111122223333:user/ci/deployer is not authorized",
                 f"User: <principal> is not authorized{WITHHELD}", id="iam-user"),
    pytest.param("User: arn:aws:iam::111122223333:root is not authorized", f"User: <principal> is not authorized{WITHHELD}", id="root"),
    pytest.param("User: arn:aws:sts::111122223333:federated-user/bob is not authorized",
                 f"User: <principal> is not authorized{WITHHELD}", id="federated-user"),
    pytest.param("arn:aws-cn:iam::111122223333:role/r and arn:aws-us-gov:sts::111122223333:assumed-role/r/s",
                 f"<role> and <principal>{WITHHELD}", id="other-partitions"),
    pytest.param("Value (arn:aws:iam::111122223333:instance-profile/web) for parameter iamInstanceProfile.arn is invalid.",
                 "Value (arn:aws:iam::111122223333:instance-profile/web) for parameter iamInstanceProfile.arn is invalid.",
                 id="instance-profile-arns-stay"),  # the tenant's own spec names it
])
def test_what_tenants_read(message, shown):
    assert for_tenants(message) == shown


def test_an_encoded_message_reads_the_same_at_every_retry():
    first = classify("UnauthorizedOperation", f"You are not authorized. Encoded authorization failure message: {BLOB}", 403)
    second = classify("UnauthorizedOperation", f"You are not authorized. Encoded authorization failure message: {BLOB[::-1]}", 403)
    assert str(first) == str(second) and "aws sts decode-authorization-message" in str(first)
    assert BLOB in first.detail  # the operator's log has it


def test_nothing_withheld_means_no_separate_detail():
    assert classify("Throttling", "Rate exceeded", 400).detail == ""


# -- credentials: which source failed and what to check -------------------------------------------


@pytest.mark.parametrize(("method", "named", "check"), [
    ("assume-role-with-web-identity", "IRSA", "eks.amazonaws.com/role-arn"),
    ("container-role", "EKS Pod Identity", "eks-pod-identity-agent"),
    ("iam-role", "instance role", "hop limit"),
    ("assume-role", "role_arn of the shared config profile", "source_profile"),
    ("custom-process", "credential_process", "prints credentials as JSON"),
    ("env", "static keys from the environment", "AWS_SESSION_TOKEN"),
    ("shared-credentials-file", "shared credentials file", "current"),
    ("config-file", "shared config file", "current"),
    ("sso", "IAM Identity Center", "aws sso login"),
    ("login-of-the-future", "botocore's login-of-the-future credentials", "that source's configuration"),
])
def test_a_credentials_failure_names_its_source_and_what_to_check(method, named, check):
    fault = credentials_unavailable("CredentialRetrievalError", "Error when retrieving credentials.", method)
    assert fault.kind is K.CREDENTIALS_UNAVAILABLE and fault.code == "CredentialRetrievalError"
    assert fault.message.startswith(f"{CREDENTIAL_SOURCES[method].name if method in CREDENTIAL_SOURCES else named} failed: "
                                    "Error when retrieving credentials; check ")
    assert named in fault.message and check in fault.message


def test_a_credentials_failure_withholds_arns_too():
    fault = credentials_unavailable("AccessDenied", f"User: {OPERATOR} is not authorized", "assume-role-with-web-identity")
    assert OPERATOR not in str(fault) and OPERATOR in fault.detail


def test_an_unknown_region_is_an_invalid_spec_at_once():
    policy = POLICIES[K.UNKNOWN_REGION]
    assert (policy.reason, policy.quiet_attempts, policy.stalled_after) == (Reason.INVALID_SPEC, 0, 0.0)
