"""The kopf wiring: watch events feed the controller; the finalizer runs its deletion.

kopf owns the watch (list, watch, reconnects), the finalizer and the operator's lifecycle.
Reconciliation runs in the controller's own work queue rather than in kopf's per-change
handlers, so that one batched observer can feed every binding and a binding's retries follow
its own capped backoff.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from . import metrics
from .api import CRD_NAME, FINALIZER, GROUP, PLURAL, VERSION
from .controller import Controller, RetryLater
from .ec2 import Ec2Gateway
from .kube import KubeWriter, load_api_client
from .ratelimit import RateLimiter
from .settings import Settings
from .uninstall import Uninstaller


WATCH_HANDLER = "watch"


class QuietWatchLog(logging.Filter):
    """kopf logs "Handler 'watch' succeeded." for every watch event; keep everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in {f"Handler {handler!r} succeeded." for handler in (WATCH_HANDLER, "crd")}


class SayOnce(logging.Filter):
    """kopf repeats "Unresolved resources cannot be served" at every CRD change: say it once per outage."""

    def __init__(self) -> None:
        super().__init__()
        self._last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        repeated = message == self._last
        self._last = message
        return not repeated


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.posting.enabled = False  # the controller records aggregated Events of its own
    settings.scanning.disabled = False  # watch CRDs: stop serving when ours goes, resume when it is back
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def build_registry(config: Settings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    holder: dict[str, Any] = {}

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)  # in-cluster or KUBECONFIG, as the status writer

    @kopf.on.startup(id="start-controller", registry=registry)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        limiter = RateLimiter(dict(config.ec2_rate_limits), config.ec2_budget_share)
        gateway = Ec2Gateway(max_concurrency=config.aws_concurrency, max_attempts=config.aws_max_attempts, limiter=limiter)
        writer = KubeWriter(load_api_client())
        holder["controller"] = controller = Controller(config, gateway, writer)
        holder["uninstaller"] = Uninstaller(writer, config.namespaces, controller.forget_all)
        await controller.start()
        if config.metrics_address:
            holder["metrics"] = await metrics.serve(controller, config.metrics_address)

    @kopf.on.cleanup(id="stop-controller", registry=registry)
    async def stop(**_: Any) -> None:
        if "metrics" in holder:
            await holder["metrics"].cleanup()
        await holder["uninstaller"].stop()
        await holder["controller"].stop()

    @kopf.on.event(GROUP, VERSION, PLURAL, id=WATCH_HANDLER, registry=registry)
    async def watched(type: str | None, body: kopf.Body, **_: Any) -> None:  # async: on the loop, not a thread
        holder["controller"].on_event(type, body)

    @kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", id="crd", registry=registry,
                   when=lambda name, **_: name == CRD_NAME)
    async def crd_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        holder["uninstaller"].on_crd_event(type, body)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="finalize", registry=registry)
    async def finalize(body: kopf.Body, retry: int, **_: Any) -> None:
        try:
            await holder["controller"].finalize(body, retry)
        except RetryLater as later:
            raise kopf.TemporaryError(str(later), delay=later.delay) from None

    @kopf.on.probe(id="bindings", registry=registry)
    def bindings(**_: Any) -> int:
        return len(holder["controller"].registry)

    return registry
