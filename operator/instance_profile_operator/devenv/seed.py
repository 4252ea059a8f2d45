"""Seed the local EC2/IAM endpoint with instance profiles and running instances.

moto's random generator is seeded first, so the same calls in the same order yield the same
instance IDs on every start: the manifests in ``examples/`` can name them.
"""

from __future__ import annotations

import urllib.request

import boto3

SEED = 20170209  # the day EC2 learned to associate instance profiles
TEAMS_SEED = 20260216  # the two teams' instances get IDs of their own, whatever the demo's
INSTANCE_NAMES = ("web-1", "web-2", "batch-1", "spare-1")
INSTANCE_PROFILES = (("/", "web-server"), ("/", "batch-worker"), ("/team-a/", "reporting"))
IMAGE_ID = "ami-0abcdef1234567890"

# docs/tenancy.md's two teams (examples/tenancy/): team A in the demo's account, moto's default;
# team B in a second account, reached through the role its policy names (moto's STS issues
# credentials of the account in the role's ARN).
DEMO_ACCOUNT = "123456789012"
SECOND_ACCOUNT = "444455556666"
SECOND_ACCOUNT_ROLE = f"arn:aws:iam::{SECOND_ACCOUNT}:role/instance-profile-operator"
TEAM_PROFILES = {DEMO_ACCOUNT: (("/team-a/", "web"),), SECOND_ACCOUNT: (("/", "team-b-worker"),)}
TEAM_INSTANCES = {DEMO_ACCOUNT: (("team-a-1", "a"), ("team-a-2", "b")), SECOND_ACCOUNT: (("team-b-1", "b"),)}


def _seed_random(endpoint_url: str, value: int) -> None:
    request = urllib.request.Request(f"{endpoint_url}/moto-api/seed?a={value}", method="POST")
    urllib.request.urlopen(request, timeout=5).close()


def _launch(ec2, name: str, tags: dict[str, str]) -> str:
    tagged = [{"Key": key, "Value": value} for key, value in {"Name": name, **tags}.items()]
    reservation = ec2.run_instances(ImageId=IMAGE_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                    TagSpecifications=[{"ResourceType": "instance", "Tags": tagged}])
    return reservation["Instances"][0]["InstanceId"]


def seed(endpoint_url: str, region: str) -> dict[str, str]:
    """Create the profiles and instances; return instance IDs by Name tag."""
    _seed_random(endpoint_url, SEED)
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
    iam = session.client("iam", endpoint_url=endpoint_url)
    for path, name in INSTANCE_PROFILES:
        iam.create_instance_profile(InstanceProfileName=name, Path=path)
    ec2 = session.client("ec2", endpoint_url=endpoint_url)
    return {name: _launch(ec2, name, {}) for name in INSTANCE_NAMES}


def second_account_session(endpoint_url: str, region: str) -> boto3.Session:
    """The second account, as the operator reaches it: through the role team B's policy names."""
    sts = boto3.client("sts", endpoint_url=endpoint_url, region_name=region,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    issued = sts.assume_role(RoleArn=SECOND_ACCOUNT_ROLE, RoleSessionName="seed")["Credentials"]
    return boto3.Session(aws_access_key_id=issued["AccessKeyId"], aws_secret_access_key=issued["SecretAccessKey"],
                         aws_session_token=issued["SessionToken"], region_name=region)


def seed_teams(endpoint_url: str, region: str) -> dict[str, str]:
    """docs/tenancy.md's two teams: their profiles and team-tagged instances in both accounts;
    return instance IDs by Name tag (the same on every start: examples/tenancy/ names them)."""
    sessions = {DEMO_ACCOUNT: boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region),
                SECOND_ACCOUNT: second_account_session(endpoint_url, region)}
    for account, session in sessions.items():  # an account's first launch draws more (its default VPC)
        session.client("ec2", endpoint_url=endpoint_url).describe_vpcs()
    _seed_random(endpoint_url, TEAMS_SEED)
    instances = {}
    for account, session in sessions.items():
        iam = session.client("iam", endpoint_url=endpoint_url)
        for path, name in TEAM_PROFILES[account]:
            iam.create_instance_profile(InstanceProfileName=name, Path=path)
        ec2 = session.client("ec2", endpoint_url=endpoint_url)
        for name, team in TEAM_INSTANCES[account]:
            instances[name] = _launch(ec2, name, {"team": team})
    return instances
