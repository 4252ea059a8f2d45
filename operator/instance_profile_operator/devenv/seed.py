"""Seed the local EC2/IAM endpoint with instance profiles and running instances.

moto's random generator is seeded first, so the same calls in the same order yield the same
instance IDs on every start: the manifests in ``examples/`` can name them.
"""

from __future__ import annotations

import urllib.request

import boto3

SEED = 20170209  # the day EC2 learned to associate instance profiles
INSTANCE_NAMES = ("web-1", "web-2", "batch-1", "spare-1")
INSTANCE_PROFILES = (("/", "web-server"), ("/", "batch-worker"), ("/team-a/", "reporting"))
IMAGE_ID = "ami-0abcdef1234567890"


def seed(endpoint_url: str, region: str) -> dict[str, str]:
    """Create the profiles and instances; return instance IDs by Name tag."""
    request = urllib.request.Request(f"{endpoint_url}/moto-api/seed?a={SEED}", method="POST")
    urllib.request.urlopen(request, timeout=5).close()
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
    iam = session.client("iam", endpoint_url=endpoint_url)
    for path, name in INSTANCE_PROFILES:
        iam.create_instance_profile(InstanceProfileName=name, Path=path)
    ec2 = session.client("ec2", endpoint_url=endpoint_url)
    instances = {}
    for name in INSTANCE_NAMES:
        reservation = ec2.run_instances(
            ImageId=IMAGE_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}],
        )
        instances[name] = reservation["Instances"][0]["InstanceId"]
    return instances
