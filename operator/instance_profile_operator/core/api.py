"""Names of the InstanceProfileBinding API, its finalizer, conditions and reasons."""

GROUP = "ec2.instanceprofiles.dev"
VERSION = "v1alpha1"
PLURAL = "instanceprofilebindings"
POLICY_PLURAL = "instanceprofilepolicies"
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
    POLICY_DENIED = "PolicyDenied"
    INTERNAL_ERROR = "InternalError"
    RELEASED = "Released"
    DELETING = "Deleting"
    ANNOTATION_IGNORED = "AnnotationIgnored"

# InstanceProfileBindingSet: a fleet's bindings, one per instance its tag selector matches.
SET_PLURAL = "instanceprofilebindingsets"
SET_KIND = "InstanceProfileBindingSet"
SET_LABEL = f"{GROUP}/set"  # on every child binding: the name of the set that owns it
SET_CRD_NAME = f"{SET_PLURAL}.{GROUP}"


class SetReason:
    """Reasons of a set's conditions and Events."""

    ALL_READY = "AllReady"
    CHILDREN_NOT_READY = "ChildrenNotReady"
    INSTANCES_SELECTED = "InstancesSelected"
    INSTANCES_RELEASED = "InstancesReleased"
    CHILDREN_UPDATED = "ChildrenUpdated"
