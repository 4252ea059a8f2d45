"""The moto endpoint answers the four instance-profile calls, and the gateway drives them."""

from __future__ import annotations

import boto3
import pytest

from instance_profile_operator.aws.ec2 import Ec2Gateway
from instance_profile_operator.core.faults import AwsFault, FaultKind
from instance_profile_operator.core.model import AssociationState, InstanceState, ProfileRef


def test_the_four_calls_answer(ec2, iam, new_instance):
    instance_id = new_instance()
    associated = ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Name": "web-server"})
    association = associated["IamInstanceProfileAssociation"]
    assert association["InstanceId"] == instance_id and association["IamInstanceProfile"]["Arn"].endswith("/web-server")
    described = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [instance_id]}])
    assert [a["AssociationId"] for a in described["IamInstanceProfileAssociations"]] == [association["AssociationId"]]
    replaced = ec2.replace_iam_instance_profile_association(
        AssociationId=association["AssociationId"], IamInstanceProfile={"Name": "batch-worker"})
    assert replaced["IamInstanceProfileAssociation"]["IamInstanceProfile"]["Arn"].endswith("/batch-worker")
    ec2.disassociate_iam_instance_profile(AssociationId=replaced["IamInstanceProfileAssociation"]["AssociationId"])
    after = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [instance_id]}])
    assert after["IamInstanceProfileAssociations"] == []


@pytest.fixture
def gateway(devenv, monkeypatch):
    for key, value in devenv.aws_variables().items():
        monkeypatch.setenv(key, value)
    gateway = Ec2Gateway(max_concurrency=4, max_attempts=1, session=boto3.Session())
    yield gateway
    gateway.close()


async def test_gateway_describes_many_instances_in_batches_of_200(gateway, ec2, iam):
    reservation = ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=230, MaxCount=230)
    instance_ids = [i["InstanceId"] for i in reservation["Instances"]]
    for instance_id in instance_ids[:210]:
        ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Name": "web-server"})
    found = await gateway.describe_associations("us-east-1", instance_ids)
    assert sorted(found) == sorted(instance_ids[:210])
    assert all(a.state is AssociationState.ASSOCIATED for a in found.values())
    # 230 IDs: two filter batches (200 + 30); moto pages by 100, so the first batch takes two pages
    assert gateway.calls["describe_iam_instance_profile_associations"] == 3
    ec2.create_tags(Resources=[instance_ids[0]], Tags=[{"Key": "team", "Value": "a"}])
    instances = await gateway.describe_instances("us-east-1", instance_ids[:3] + ["i-00000000000000000"])
    assert [instances[i].state for i in instance_ids[:3]] == [InstanceState.RUNNING] * 3
    assert instances[instance_ids[0]].tags == {"team": "a"} and instances[instance_ids[1]].tags == {}
    assert instances["i-00000000000000000"].state is InstanceState.NOT_FOUND


async def test_gateway_mutations_and_classified_errors(gateway, new_instance):
    instance_id = new_instance()
    created = await gateway.associate("us-east-1", instance_id, ProfileRef(name="web-server"))
    assert created.instance_id == instance_id
    with pytest.raises(AwsFault) as again:
        await gateway.associate("us-east-1", instance_id, ProfileRef(name="web-server"))
    assert again.value.kind is FaultKind.STALE_OBSERVATION  # "There is an existing association"
    replaced = await gateway.replace("us-east-1", created.association_id, ProfileRef(arn="arn:aws:iam::123456789012:instance-profile/batch-worker"))
    assert replaced.profile_arn.endswith("/batch-worker")
    await gateway.disassociate("us-east-1", replaced.association_id)
    with pytest.raises(AwsFault) as gone:
        await gateway.disassociate("us-east-1", replaced.association_id)
    assert gone.value.kind is FaultKind.STALE_OBSERVATION
    with pytest.raises(AwsFault) as missing:
        await gateway.associate("us-east-1", "i-0123456789abcdef0", ProfileRef(name="web-server"))
    assert missing.value.kind is FaultKind.INSTANCE_NOT_FOUND


async def test_unreachable_endpoint_is_unavailable(monkeypatch):
    from instance_profile_operator.devenv.cluster import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    gateway = Ec2Gateway(max_attempts=1, session=boto3.Session())
    try:
        with pytest.raises(AwsFault) as caught:
            await gateway.describe_associations("us-east-1", ["i-0123456789abcdef0"])
        assert caught.value.kind is FaultKind.UNAVAILABLE
    finally:
        gateway.close()
