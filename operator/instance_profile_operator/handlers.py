"""The kopf wiring: the operator's lifecycle, the watches of sets, policies, namespaces and CRDs.

The bindings are not kopf's: their watch (``BindingWatch``) feeds the controller, which adds and
runs their finalizer itself (``Lifecycle``). kopf keeps per-object memory and a worker for every
object of a kind it serves, which at 10,000 bindings outweighed the bindings themselves.
Reconciliation runs in the controller's own work queue rather than in kopf's per-change
handlers, so that one batched observer can feed every binding and a binding's retries follow
its own capped backoff.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from .aws.accounts import Accounts
from .aws.ec2 import Ec2Gateway
from .aws.ratelimit import RateLimiter
from .bindings.controller import Controller
from .bindings.watch import BindingWatch
from .bindings.uninstall import SET_CHILDREN, Uninstaller
from .core.api import CRD_NAME, GROUP, POLICY_PLURAL, SET_CRD_NAME, SET_PLURAL, VERSION
from .core.tenancy import Tenancy
from .kube.writer import WRITERS, KubeWriter, load_api_client
from .runtime.metrics import Metrics
from .sets.controller import SetController
from .settings import Settings


SET_HANDLER = "set"
QUIET_HANDLERS = (SET_HANDLER, "crd", "policy", "namespace")


class QuietWatchLog(logging.Filter):
    """kopf logs "Handler 'watch' succeeded." for every watch event; keep everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in {f"Handler {handler!r} succeeded." for handler in QUIET_HANDLERS}


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


class NoErrorThatIsNone(logging.Filter):
    """One of kopf's ERROR lines reports no error: a 429 it retries (at every start, the API server
    answers "storage is (re)initializing" until its watch cache is ready). It is logged at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR:
            message = record.getMessage()
            if "failed; will retry" in message and "APITooManyRequestsError" in message:
                self._lower(record, message)
        return True

    @staticmethod
    def _lower(record: logging.LogRecord, message: str) -> None:
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.msg, record.args = message, ()


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    settings.posting.enabled = False  # the controller records aggregated Events of its own
    settings.scanning.disabled = False  # watch CRDs: stop serving when ours goes, resume when it is back
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def build_registry(config: Settings, metrics: Metrics, watch: BindingWatch) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    holder: dict[str, Any] = {}

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)  # in-cluster or KUBECONFIG, as the status writer

    @kopf.on.startup(id="start-controller", registry=registry)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        writer = KubeWriter(load_api_client(connections=WRITERS))
        tenancy = Tenancy(config.enforcing)
        if config.enforcing:  # know every policy and namespace before the first binding is judged
            for body in await writer.list_policies():
                tenancy.book.on_policy(None, body)
            for body in await writer.list_namespaces():
                tenancy.book.on_namespace(None, body)
        limiter = RateLimiter(dict(config.ec2_rate_limits), config.ec2_budget_share)
        gateway = Ec2Gateway(max_concurrency=config.aws_concurrency, max_attempts=config.aws_max_attempts, limiter=limiter,
                             accounts=Accounts(region=config.region), account_of=tenancy.account_of, metrics=metrics)
        holder["tenancy"] = tenancy
        known = watch.hand_over()
        holder["controller"] = controller = Controller(config, gateway, writer, tenancy, metrics=metrics, registry=known)
        metrics.attach(controller)
        holder["sets"] = sets = SetController(config, gateway, writer, tenancy)
        await sets.start()
        holder["uninstallers"] = {u.uninstalled.crd_name: u for u in (  # by the name of the CRD each one watches
            Uninstaller(controller.finalizer.releases, config.namespaces, controller.forget_all),
            Uninstaller(controller.finalizer.releases, config.namespaces, sets.forget_all, uninstalled=SET_CHILDREN))}
        await controller.start()
        if known is not None:
            controller.take_over()

        def watched(event_type: str | None, body: dict[str, Any]) -> None:  # a binding, maybe a set's child
            controller.on_event(event_type, body)
            sets.on_child(event_type, body)

        watch.forward(watched)

    @kopf.on.cleanup(id="stop-controller", registry=registry)
    async def stop(**_: Any) -> None:
        watch.stop()
        for uninstaller in holder["uninstallers"].values():
            await uninstaller.stop()
        await holder["sets"].stop()
        await holder["controller"].stop()

    @kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", id="crd", registry=registry,
                   when=lambda name, **_: name in (CRD_NAME, SET_CRD_NAME))
    async def crd_changed(type: str | None, body: kopf.Body, name: str, **_: Any) -> None:
        holder["uninstallers"][name].on_crd_event(type, body)

    if config.enforcing:
        @kopf.on.event(GROUP, VERSION, POLICY_PLURAL, id="policy", registry=registry)
        async def policy_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
            namespaces = holder["tenancy"].book.on_policy(type, body)
            holder["controller"].requeue_namespaces(namespaces)
            holder["sets"].requeue_namespaces(namespaces)

        @kopf.on.event("", "v1", "namespaces", id="namespace", registry=registry)
        async def namespace_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
            namespaces = holder["tenancy"].book.on_namespace(type, body)
            holder["controller"].requeue_namespaces(namespaces)
            holder["sets"].requeue_namespaces(namespaces)

    @kopf.on.event(GROUP, VERSION, SET_PLURAL, id=SET_HANDLER, registry=registry)
    async def set_watched(type: str | None, body: kopf.Body, **_: Any) -> None:
        holder["sets"].on_set(type, body)

    @kopf.on.probe(id="bindings", registry=registry)
    def bindings(**_: Any) -> int:
        return len(holder["controller"].registry)

    return registry

