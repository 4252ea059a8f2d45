"""Leader election with a coordination.k8s.io/v1 Lease, the way client-go and controller-runtime do it.

A replica stands by until it holds the Lease, and only then starts kopf: a standby only reads
(its bindings, for a warm takeover: ``bindings/standby.py``), adds no finalizer, makes no EC2
call and writes no status; it serves its health endpoint and ``/metrics``
(``leader_election_master_status`` 0). The leader renews the Lease
every retry period. A standby takes the Lease when it has no holder (released on a graceful
stop) or when the holder has not renewed it for the lease duration, measured on the standby's
own clock from when it last saw the Lease change, so clock skew between nodes does not matter.
A leader that cannot renew within the renew deadline, or finds another holder, exits at once
with status 1, as controller-runtime's managers do: its term is over and the pod restarts as a
standby.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import signal
import socket
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping

import kubernetes
import urllib3
from aiohttp import web
from kubernetes.client.exceptions import ApiException

from ..runtime.metrics import LEASE, Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """controller-runtime's defaults."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def identity() -> str:
    """Unique per process, readable per pod: ``hostname_uuid``, as controller-runtime makes it."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with exactly six fractional digits)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def may_take(spec: Mapping[str, Any], me: str, observed_at: float, now: float, default_duration: float) -> bool:
    """Whether ``me`` may write the Lease: it has no holder, is ours, or its holder has not
    renewed it within its duration since we saw it change (``observed_at``, our monotonic clock)."""
    holder = spec.get("holderIdentity")
    if not holder or holder == me:
        return True
    return now >= observed_at + (spec.get("leaseDurationSeconds") or default_duration)


def claim(spec: Mapping[str, Any] | None, me: str, duration: float, now: datetime) -> dict[str, Any]:
    """The spec that makes ``me`` the holder: a renewal keeps the term's acquireTime and the
    transition count; taking over from anyone (or from a released Lease) starts a new term."""
    renewing = spec is not None and spec.get("holderIdentity") == me and bool(spec.get("acquireTime"))
    transitions = (spec or {}).get("leaseTransitions") or 0
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": math.ceil(duration),
        "acquireTime": spec["acquireTime"] if renewing else micro_time(now),  # type: ignore[index]
        "renewTime": micro_time(now),
        "leaseTransitions": transitions if renewing or spec is None else transitions + 1,
    }


def released(spec: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """What the holder writes on a graceful stop (client-go's release): no holder, so a standby
    takes the Lease at its next attempt instead of waiting for it to expire."""
    return {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": micro_time(now), "renewTime": micro_time(now),
            "leaseTransitions": spec.get("leaseTransitions") or 0}


class Elector:
    """Takes, renews and releases one Lease; its own thread, so a busy operator never delays a renewal."""

    def __init__(self, api: kubernetes.client.CoordinationV1Api, namespace: str, me: str, timing: Timing, metrics: Metrics,
                 name: str = LEASE, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self._api = api
        self.namespace, self.name, self.identity, self.timing = namespace, name, me, timing
        self._metrics = metrics
        self._clock, self._now = clock, now
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
        self._observed: Mapping[str, Any] | None = None  # the Lease spec as last seen
        self._observed_at = 0.0
        self.leading = False

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    async def _run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(
            call, *args, _preload_content=False, _request_timeout=self.timing.renew_deadline, **kwargs))

    async def _read(self) -> dict[str, Any] | None:
        try:
            response = await self._run(self._api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return json.loads(response.data)

    def _body(self, spec: dict[str, Any], resource_version: str | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version  # the update fails if anyone wrote since we read
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    async def try_acquire_or_renew(self) -> bool:
        """One attempt to take or renew the Lease; False when another holds it or the write failed."""
        try:
            lease = await self._read()
            if lease is None:
                spec = claim(None, self.identity, self.timing.lease_duration, self._now())
                await self._run(self._api.create_namespaced_lease, self.namespace, self._body(spec))
            else:
                current = lease.get("spec") or {}
                if current != self._observed:
                    self._observed, self._observed_at = current, self._clock()
                if not may_take(current, self.identity, self._observed_at, self._clock(), self.timing.lease_duration):
                    return False
                spec = claim(current, self.identity, self.timing.lease_duration, self._now())
                await self._run(self._api.replace_namespaced_lease, self.name, self.namespace,
                                self._body(spec, lease["metadata"]["resourceVersion"]))
        except ApiException as error:
            (log.debug if error.status == 409 else log.warning)("Lease %s: %s %s", self.ref, error.status, error.reason)
            return False
        except (urllib3.exceptions.HTTPError, OSError) as error:
            log.warning("Lease %s: %s", self.ref, error)
            return False
        self._observed, self._observed_at = spec, self._clock()
        return True

    def held_by_another(self) -> bool:
        holder = (self._observed or {}).get("holderIdentity")
        return bool(holder) and holder != self.identity

    async def acquire(self, stop: asyncio.Event, standing_by: Callable[[], None] = lambda: None) -> bool:
        """Try every retry period until the Lease is ours (True) or ``stop`` is set (False);
        ``standing_by`` is called once, after the first attempt that does not win it."""
        log.info("standing by: waiting to hold Lease %s as %s", self.ref, self.identity)
        first = True
        while not await self.try_acquire_or_renew():
            if first:
                first = False
                standing_by()
            try:
                await asyncio.wait_for(stop.wait(), self.timing.retry_period)
                return False
            except asyncio.TimeoutError:
                pass
        self.leading = True
        self._metrics.leading(True)
        log.info("became the leader: holding Lease %s as %s", self.ref, self.identity)
        return True

    async def keep(self) -> None:
        """Renew every retry period; return once leadership is lost: another holds the Lease,
        or no renewal succeeded within the renew deadline."""
        renewed = self._clock()
        while True:
            await asyncio.sleep(self.timing.retry_period)
            left = renewed + self.timing.renew_deadline - self._clock()
            try:
                ok = await asyncio.wait_for(self.try_acquire_or_renew(), max(left, 0.0))
            except asyncio.TimeoutError:
                ok = False
            if ok:
                renewed = self._clock()
            elif self.held_by_another() or self._clock() - renewed >= self.timing.renew_deadline:
                self.leading = False
                self._metrics.leading(False)
                return

    async def release(self) -> None:
        """Give the Lease up if we hold it, so that a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        self._metrics.leading(False)
        try:
            lease = await self._read()
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                await self._run(self._api.replace_namespaced_lease, self.name, self.namespace,
                                self._body(released(lease["spec"], self._now()), lease["metadata"]["resourceVersion"]))
                log.info("released Lease %s", self.ref)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            log.warning("could not release Lease %s; it expires on its own: %s", self.ref, error)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def serve_standby_probe(endpoint: str) -> web.AppRunner:
    """Answer the liveness endpoint (same URL as kopf's) while kopf is not running."""
    parts = urllib.parse.urlsplit(endpoint)

    async def healthy(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(parts.path or "/", healthy)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "localhost", parts.port or 80).start()
    return runner


def _exit_at_once(code: int) -> None:
    """Stop acting this instant: another replica may be reconciling already. No graceful shutdown
    (it would wait for in-flight handlers, EC2 calls and threads)."""
    logging.shutdown()
    os._exit(code)


async def run_elected(elector: Elector, operate: Callable[[], Awaitable[None]], liveness_endpoint: str | None,
                      standing_by: Callable[[], None] = lambda: None) -> None:
    """Stand by until elected (``standing_by`` once the Lease is not won at once), then ``operate()``
    (kopf) while renewing the Lease.

    SIGTERM/SIGINT stop a standby at once and a leader gracefully (kopf's own signal handling),
    after which the Lease is released. Losing the Lease ends the process with status 1.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    probe = await serve_standby_probe(liveness_endpoint) if liveness_endpoint else None
    try:
        elected = await elector.acquire(stop, standing_by)
    finally:
        if probe is not None:
            await probe.cleanup()  # kopf serves the same endpoint from now on
    if not elected:
        elector.close()
        return
    operating = asyncio.create_task(operate(), name="operator")
    for signum in signals:  # until kopf, starting, installs its own handlers
        loop.add_signal_handler(signum, operating.cancel)
    keeping = asyncio.create_task(elector.keep(), name="lease-renewal")
    try:
        await asyncio.wait({operating, keeping}, return_when=asyncio.FIRST_COMPLETED)
        if keeping.done() and not operating.done():
            log.error("leader election lost: Lease %s %s; exiting", elector.ref,
                      "is held by another replica" if elector.held_by_another() else "could not be renewed in time")
            _exit_at_once(1)
    finally:
        keeping.cancel()
        await elector.release()
        elector.close()
    if not operating.cancelled():
        await operating  # re-raise what ended the operator, if anything did
