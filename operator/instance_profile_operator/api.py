"""Names of the InstanceProfileBinding API, its finalizer, conditions and reasons."""

GROUP = "ec2.instanceprofiles.dev"
VERSION = "v1alpha1"
PLURAL = "instanceprofilebindings"
KIND = "InstanceProfileBinding"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = f"{GROUP}/finalizer"
COMPONENT = "instance-profile-operator"
CRD_NAME = f"{PLURAL}.{GROUP}"

# kstatus condition types
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


class Reason:
    """CamelCase reasons of the Ready condition, also used as Event reasons."""

    ASSOCIATED = "Associated"
    ASSOCIATING = "Associating"
    DISASSOCIATING = "Disassociating"
    REPLACED = "Replaced"
    DISASSOCIATED = "Disassociated"
    ADOPTED = "Adopted"
    DRIFT_CORRECTED = "DriftCorrected"
    RETAINED = "Retained"
    CONFLICT = "Conflict"
    INVALID_SPEC = "InvalidSpec"
    INSTANCE_NOT_FOUND = "InstanceNotFound"
    INSTANCE_NOT_READY = "InstanceNotReady"
    INSTANCE_PROFILE_NOT_FOUND = "InstanceProfileNotFound"
    ACCESS_DENIED = "AccessDenied"
    THROTTLED = "Throttled"
    AWS_UNAVAILABLE = "AWSUnavailable"
    AWS_ERROR = "AWSError"
    CREDENTIALS_UNAVAILABLE = "CredentialsUnavailable"
    RELEASED = "Released"
