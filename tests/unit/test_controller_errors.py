"""An exception nothing classified never leaves a binding without a status, nor stops the operator."""

from __future__ import annotations

from instance_profile_operator.core.api import FINALIZER
from instance_profile_operator.bindings.controller import Controller
from instance_profile_operator.core.model import Association, AssociationState
from instance_profile_operator.settings import Settings
from instance_profile_operator.core.tenancy import Tenancy

from ..support.waiting import until

TIMEOUT = 5.0  # real seconds: reached only when a test fails
ARN = "arn:aws:iam::123456789012:instance-profile/web"


class Writer:
    """The status writer and Event recorder, in memory."""

    def __init__(self) -> None:
        self.statuses: dict[tuple[str, str], dict] = {}
        self.events: list[tuple[tuple[str, str], str]] = []

    async def patch_status(self, binding, status) -> bool:
        self.statuses[binding.key] = status
        return True

    async def record(self, binding, event) -> None:
        self.events.append((binding.key, event.reason))

    def close(self) -> None:
        pass


class Gateway:
    """EC2 with one region where describing raises what nobody foresaw."""

    def __init__(self) -> None:
        self.calls = 0

    async def describe_associations(self, region, instance_ids, account=""):
        self.calls += 1
        if region == "eu-west-1":
            raise RuntimeError("unforeseen: the model changed under us")
        return {i: Association(f"iip-{i}", i, ARN, "AIPA", AssociationState.ASSOCIATED) for i in instance_ids}

    def close(self) -> None:
        pass


def binding(name: str, region: str) -> dict:
    return {"metadata": {"namespace": "team", "name": name, "uid": name, "generation": 1, "finalizers": [FINALIZER]},
            "spec": {"instanceId": f"i-{name}", "iamInstanceProfile": {"name": "web"}, "region": region}}


def reason(status: dict | None) -> str | None:
    return next((c["reason"] for c in (status or {}).get("conditions", []) if c["type"] == "Ready"), None)


async def test_an_unclassified_exception_shows_as_internal_error_and_the_operator_goes_on():
    writer, gateway = Writer(), Gateway()
    settings = Settings(region="us-east-1", retry_base_seconds=0.01, retry_max_seconds=0.05)
    controller = Controller(settings, gateway, writer, Tenancy(enforcing=False))
    await controller.start()
    try:
        controller.on_event("ADDED", binding("broken", "eu-west-1"))
        controller.on_event("ADDED", binding("fine", "us-east-1"))
        await until(lambda: reason(writer.statuses.get(("team", "fine"))) == "Associated"
                    and reason(writer.statuses.get(("team", "broken"))) == "InternalError", TIMEOUT)
        broken = writer.statuses["team", "broken"]
        [ready] = [c for c in broken["conditions"] if c["type"] == "Ready"]
        assert ready["status"] == "False"
        assert ready["message"].startswith("RuntimeError: unforeseen: the model changed under us; retrying with backoff")
        calls = gateway.calls
        await until(lambda: gateway.calls >= calls + 2, TIMEOUT)  # retried, with backoff
        assert writer.events.count((("team", "broken"), "InternalError")) == 1  # said once, not at each retry
        assert all(not task.done() for task in controller._tasks)  # every worker still at work
    finally:
        await controller.stop()
