"""The trimmed AWS API models: only the operations the operator calls, the shapes they reach,
and the endpoints of its services, resolved as botocore's whole data resolves them."""

from __future__ import annotations

import boto3
import botocore.loaders
import pytest

from instance_profile_operator.aws.accounts import Accounts
from instance_profile_operator.aws.apimodel import EC2_OPERATIONS, STS_OPERATIONS, trimmed
from instance_profile_operator.core.model import Account

MODEL = {
    "metadata": {"serviceId": "Toy"},
    "operations": {
        "Kept": {"input": {"shape": "KeptRequest"}, "output": {"shape": "KeptResult"}, "errors": [{"shape": "Oops"}]},
        "Dropped": {"input": {"shape": "DroppedRequest"}},
    },
    "shapes": {
        "KeptRequest": {"type": "structure", "members": {"Ids": {"shape": "IdList"}, "Tags": {"shape": "TagMap"}}},
        "IdList": {"type": "list", "member": {"shape": "String"}},
        "TagMap": {"type": "map", "key": {"shape": "String"}, "value": {"shape": "Tag"}},
        "Tag": {"type": "structure", "members": {"Value": {"shape": "String"}, "Self": {"shape": "Tag"}}},
        "KeptResult": {"type": "structure", "members": {}},
        "Oops": {"type": "structure", "members": {"Code": {"shape": "Integer"}}},
        "DroppedRequest": {"type": "structure", "members": {"Only": {"shape": "OnlyDropped"}, "Shared": {"shape": "String"}}},
        "OnlyDropped": {"type": "string"},
        "String": {"type": "string"},
        "Integer": {"type": "integer"},
    },
}


def test_trimmed_keeps_the_operations_and_every_shape_they_reach():
    model = trimmed(MODEL, frozenset({"Kept"}))
    assert list(model["operations"]) == ["Kept"]
    assert set(model["shapes"]) == {"KeptRequest", "IdList", "TagMap", "Tag", "KeptResult", "Oops", "String", "Integer"}
    assert model["metadata"] == MODEL["metadata"] and model["shapes"]["Tag"] == MODEL["shapes"]["Tag"]


def test_trimmed_names_an_operation_the_model_lacks():
    with pytest.raises(KeyError, match="Toy has no operation Missing"):
        trimmed(MODEL, frozenset({"Kept", "Missing"}))


def session(accounts: bool) -> boto3.Session:
    base = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return Accounts(base=base).session(Account()) if accounts else base


def test_clients_know_only_the_operations_the_operator_calls():
    ec2, sts = (session(True).client(service, region_name="eu-west-1") for service in ("ec2", "sts"))
    assert set(ec2.meta.service_model.operation_names) == EC2_OPERATIONS
    assert set(sts.meta.service_model.operation_names) == STS_OPERATIONS
    assert not hasattr(ec2, "run_instances")


def test_what_is_kept_is_botocores_model_unchanged():
    kept = session(True)._session.get_component("data_loader").load_service_model("ec2", "service-2")
    whole = botocore.loaders.create_loader().load_service_model("ec2", "service-2")
    assert all(kept["operations"][name] == whole["operations"][name] for name in EC2_OPERATIONS)
    assert all(kept["shapes"][name] == whole["shapes"][name] for name in kept["shapes"])
    assert kept["metadata"] == whole["metadata"]


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-2", "cn-north-1", "us-gov-west-1", "us-iso-east-1"])
@pytest.mark.parametrize("service", ["ec2", "sts"])
def test_endpoints_resolve_as_with_the_whole_data(service, region):
    trimmed_url = session(True).client(service, region_name=region).meta.endpoint_url
    assert trimmed_url == session(False).client(service, region_name=region).meta.endpoint_url
