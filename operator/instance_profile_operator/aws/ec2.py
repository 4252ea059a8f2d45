"""The EC2 gateway: the five calls the operator makes, async, with errors classified.

boto3 is synchronous, so calls run on a small dedicated thread pool and the event loop never
blocks. We chose that over an async botocore (aiobotocore) on purpose: aiobotocore pins exact
botocore releases, which couples the operator's boto3 to another project's release cadence,
while the operator's EC2 call rate is bounded by EC2's own API limits, for which a handful of
threads is plenty. boto3 clients are thread-safe; one is kept per account (role ARN and external
ID) and region, made by ``accounts.Accounts`` once the account's credentials are at hand, and
dropped with its rate-limit buckets when no binding names that place any more (``retain``). A
region the account's partition does not have is refused before any client or token.

Every request first waits for a token of its (account, region, action) from the
``RateLimiter`` (a paginated describe takes one per page), and reports EC2's refusals back to
it. Retries are the gateway's, not botocore's (see ``ratelimit`` for why): a throttled request
tries again once its slowed-down bucket grants another token, a 5xx or timeout after a short
jittered backoff, up to ``max_attempts`` in all. The pool size caps concurrent calls, and the
limiter grants a token only while one of the pool's threads is free (its ``slots``), so a
request is sent the moment it gets its token. Clients are made on the loop's default executor,
never holding a thread a granted request waits for. Before each request the account's credentials
are checked (refreshed if they expire soon), so that their failures are classified as such.

A fault whose tenant-facing message withholds part of AWS's text (``faults.for_tenants``) is
logged here with the full text.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Collection, Iterable, Mapping

import boto3
import botocore.config
import botocore.exceptions

from ..core.faults import AwsFault, FaultKind, classify, credentials_unavailable, unreachable
from ..core.model import Account, Association, AssociationState, Instance, InstanceState, Place, ProfileRef
from ..runtime.metrics import Metrics
from ..runtime.workqueue import backoff
from .accounts import Accounts
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)
MAX_FILTER_VALUES = 200  # EC2's limit on the values of one filter
SELECTOR_PAGE_SIZE = 1000  # DescribeInstances by tag: the largest page EC2 gives
LIVE_STATES = ("pending", "running", "stopping", "stopped")  # instances a set selects
RETRY_BASE_SECONDS, RETRY_MAX_SECONDS = 0.25, 4.0  # after a 5xx or a timeout
_RETRIED = (FaultKind.THROTTLED, FaultKind.UNAVAILABLE)

_CREDENTIAL_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.TokenRetrievalError,
    botocore.exceptions.NoAuthTokenError,
    botocore.exceptions.SSOError,
)

_LIVE_FIRST = {
    AssociationState.ASSOCIATED: 0,
    AssociationState.ASSOCIATING: 1,
    AssociationState.DISASSOCIATING: 2,
}


def chunks(items: list[str], size: int = MAX_FILTER_VALUES) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def current_associations(items: Iterable[Association]) -> dict[str, Association]:
    """The one association that matters per instance: live ones win over leaving ones;
    ``disassociated`` records are history."""
    best: dict[str, Association] = {}
    for item in items:
        if item.state is AssociationState.DISASSOCIATED:
            continue
        kept = best.get(item.instance_id)
        if kept is None or _LIVE_FIRST[item.state] < _LIVE_FIRST[kept.state]:
            best[item.instance_id] = item
    return best


class Ec2Gateway:
    def __init__(self, max_concurrency: int = 8, max_attempts: int = 5, session: boto3.Session | None = None,
                 limiter: RateLimiter | None = None, accounts: Accounts | None = None,
                 account_of: Callable[[str], Account] = lambda role_arn: Account(role_arn), metrics: Metrics | None = None):
        self._accounts = accounts or Accounts(base=session)
        self._account_of = account_of  # role ARN -> the Account (with its external ID) of the policies
        self._metrics = metrics or Metrics()
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="ec2")
        self._max_attempts = max_attempts
        self.limiter = limiter or RateLimiter()
        self.limiter.slots = max_concurrency
        self._config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": 1},  # the gateway retries, through the limiter
            connect_timeout=5,
            read_timeout=20,
            max_pool_connections=max_concurrency,
            user_agent_extra="instance-profile-operator",
        )
        self._clients: dict[Place, Any] = {}
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}  # requests sent per operation, for metrics and benchmarks
        self.throttled: dict[str, int] = {}  # of which EC2 refused (RequestLimitExceeded)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _client(self, account: Account, region: str) -> Any:
        client = self._clients.get((account, region))
        if client is None:
            made = self._accounts.client(account, "ec2", region, self._config)  # outside the lock: it may call STS
            with self._lock:
                client = self._clients.setdefault((account, region), made)
        return client

    def _invoke(self, account: Account, region: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        self._accounts.credentials(account)  # refreshed here if need be: a failure is the credentials', classified
        try:
            return getattr(self._client(account, region), operation)(**params)
        except botocore.exceptions.ClientError as error:
            details = error.response.get("Error", {})
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise classify(details.get("Code", "Unknown"), details.get("Message", ""), status, error.operation_name) from None
        except _CREDENTIAL_ERRORS as error:
            raise credentials_unavailable(type(error).__name__, str(error)) from None
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            raise unreachable(error) from None

    def retain(self, places: Collection[Place]) -> None:
        """Drop the clients, sessions and rate-limit buckets of places no binding names any more,
        and the clients of an account whose policy changed its external ID."""
        with self._lock:
            for account, region in [key for key in self._clients
                                    if (key[0].key, key[1]) not in places or self._account_of(key[0].key) != key[0]]:
                del self._clients[account, region]
            in_use = {account for account, _ in self._clients}
        self._accounts.retain(in_use)
        self.limiter.retain(places)

    async def _call(self, region: str, operation: str, account: str = "", **params: Any) -> dict[str, Any]:
        where = self._account_of(account)
        try:
            return await self._attempts(where, region, operation, params)
        except AwsFault as fault:
            if fault.detail:  # status and Events show less
                log.warning("%s in %s with %s failed: %s: %s", operation, region, where.display, fault.code, fault.detail)
            raise

    async def _attempts(self, account: Account, region: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        action = "".join(word.capitalize() for word in operation.split("_"))
        if (account, region) not in self._clients:  # make the client before the token: a token is sent at once
            await loop.run_in_executor(None, self._client, account, region)
        attempts = 0
        while True:
            grant = await self.limiter.acquire(account.key, region, action)
            self.calls[operation] = self.calls.get(operation, 0) + 1
            attempts += 1
            started = time.monotonic()
            try:
                response = await loop.run_in_executor(self._executor, functools.partial(self._invoke, account, region, operation, params))
            except AwsFault as fault:
                self._metrics.ec2_request(operation, fault.kind.value, time.monotonic() - started)
                if fault.kind is FaultKind.THROTTLED:
                    self.throttled[operation] = self.throttled.get(operation, 0) + 1
                    self.limiter.throttled(grant)  # the next attempt waits for the slowed-down bucket
                if fault.kind not in _RETRIED or attempts >= self._max_attempts:
                    raise
                failed = fault
            else:
                self._metrics.ec2_request(operation, "ok", time.monotonic() - started)
                return response
            finally:
                self.limiter.release(grant)
            if failed.kind is FaultKind.UNAVAILABLE:
                await asyncio.sleep(backoff(attempts - 1, RETRY_BASE_SECONDS, RETRY_MAX_SECONDS))

    async def _pages(self, region: str, operation: str, instance_ids: Iterable[str],
                     account: str) -> AsyncIterator[dict[str, Any]]:
        """Every page of ``operation`` filtered by instance ID, 200 IDs per call."""
        for batch in chunks(sorted(set(instance_ids))):
            params: dict[str, Any] = {"Filters": [{"Name": "instance-id", "Values": batch}]}
            while True:
                page = await self._call(region, operation, account, **params)
                yield page
                if not page.get("NextToken"):
                    break
                params["NextToken"] = page["NextToken"]

    async def describe_associations(self, region: str, instance_ids: Iterable[str],
                                    account: str = "") -> dict[str, Association]:
        """The current association of each instance that has one."""
        found = [
            Association.from_aws(item)
            async for page in self._pages(region, "describe_iam_instance_profile_associations", instance_ids, account)
            for item in page.get("IamInstanceProfileAssociations", [])
        ]
        return current_associations(found)

    async def describe_associations_by_id(self, region: str, association_ids: list[str],
                                          account: str = "") -> dict[str, Association]:
        """The listed associations, in whatever state EC2 shows them; those it does not show are absent."""
        try:
            response = await self._call(region, "describe_iam_instance_profile_associations", account,
                                        AssociationIds=association_ids)
        except AwsFault as fault:
            if fault.code == "InvalidAssociationID.NotFound":
                return {}
            raise
        found = map(Association.from_aws, response.get("IamInstanceProfileAssociations", []))
        return {a.association_id: a for a in found}

    async def describe_instances(self, region: str, instance_ids: Iterable[str],
                                 account: str = "") -> dict[str, Instance]:
        """State and tags per instance; instances EC2 does not know are NOT_FOUND, without tags."""
        instance_ids = list(instance_ids)
        found = {instance_id: Instance(InstanceState.NOT_FOUND, {}) for instance_id in instance_ids}
        async for page in self._pages(region, "describe_instances", instance_ids, account):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    found[instance["InstanceId"]] = Instance(
                        InstanceState(instance["State"]["Name"]), {t["Key"]: t["Value"] for t in instance.get("Tags") or []})
        return found

    async def instances_tagged(self, region: str, tags: Mapping[str, str], account: str = "") -> list[str]:
        """IDs of the live instances (pending, running, stopping, stopped) that carry every
        tag of ``tags``, sorted; pages of 1,000."""
        params: dict[str, Any] = {
            "Filters": [{"Name": f"tag:{key}", "Values": [value]} for key, value in sorted(tags.items())]
            + [{"Name": "instance-state-name", "Values": list(LIVE_STATES)}],
            "MaxResults": SELECTOR_PAGE_SIZE,
        }
        found: list[str] = []
        while True:
            page = await self._call(region, "describe_instances", account, **params)
            found.extend(instance["InstanceId"] for reservation in page.get("Reservations", [])
                         for instance in reservation.get("Instances", []))
            if not page.get("NextToken"):
                return sorted(set(found))
            params["NextToken"] = page["NextToken"]

    async def associate(self, region: str, instance_id: str, profile: ProfileRef,
                        account: str = "") -> Association:
        response = await self._call(
            region, "associate_iam_instance_profile", account, InstanceId=instance_id, IamInstanceProfile=profile.as_request()
        )
        return Association.from_aws(response["IamInstanceProfileAssociation"])

    async def replace(self, region: str, association_id: str, profile: ProfileRef,
                      account: str = "") -> Association:
        response = await self._call(
            region, "replace_iam_instance_profile_association", account,
            AssociationId=association_id, IamInstanceProfile=profile.as_request(),
        )
        return Association.from_aws(response["IamInstanceProfileAssociation"])

    async def disassociate(self, region: str, association_id: str, account: str = "") -> Association:
        response = await self._call(region, "disassociate_iam_instance_profile", account, AssociationId=association_id)
        return Association.from_aws(response["IamInstanceProfileAssociation"])

