"""An EC2 throttling emulator: EC2's request token buckets in front of moto's server.

moto never refuses a request. This asyncio HTTP proxy keeps a token bucket per account (the
request's access key), region (the SigV4 credential scope) and action (the form body), at EC2's
documented defaults, forwards a request that gets a token and answers one that finds its bucket
empty as EC2 does: HTTP 503 with the ``RequestLimitExceeded`` error, consuming no token. It
counts requests and refusals per action (``counts()``, or ``GET /_throttle/counts``), and can
add a neighbour: another client of the same account that steadily uses a share of an action's
refill rate, the way Terraform or an autoscaler drains the bucket the operator also uses (its
requests come first: what is left refills at ``rate * (1 - share)``).

    python bench/ec2_throttle.py --upstream http://127.0.0.1:5000 [--port 0] [--neighbour AssociateIamInstanceProfile=0.4]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

# EC2's documented defaults per account and region: (burst, refill per second). An independent
# copy of the numbers the operator uses, so the emulator does not share the operator's math.
EC2_BUCKETS: dict[str, tuple[float, float]] = {
    "AssociateIamInstanceProfile": (100, 5),
    "DisassociateIamInstanceProfile": (100, 5),
    "ReplaceIamInstanceProfileAssociation": (50, 5),
    "DescribeIamInstanceProfileAssociations": (100, 20),
    "DescribeInstances": (100, 20),
}
REFUSAL = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>'
    "<Message>Request limit exceeded.</Message></Error></Errors><RequestID>ec2-throttle</RequestID></Response>"
)
_SCOPE = re.compile(r"Credential=(?P<key>[^/]+)/[^/]+/(?P<region>[^/]+)/(?P<service>[^/]+)/")


@dataclass
class TokenBucket:
    burst: float
    rate: float
    tokens: float
    updated: float
    neighbour_share: float = 0.0
    neighbour_used: float = 0.0  # tokens the neighbour took

    def take(self, now: float) -> bool:
        gained = (now - self.updated) * self.rate
        self.neighbour_used += gained * self.neighbour_share
        self.tokens = min(self.burst, self.tokens + gained * (1 - self.neighbour_share))
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ThrottleEmulator:
    def __init__(self, upstream: str, buckets: dict[str, tuple[float, float]] | None = None):
        self.upstream = upstream.rstrip("/")
        self.limits = dict(EC2_BUCKETS if buckets is None else buckets)
        self.requests: Counter[str] = Counter()  # per action, refused ones included
        self.refused: Counter[str] = Counter()
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._lock = threading.Lock()  # counts are read from other threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what benchmarks and tests call --------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            neighbours: Counter[str] = Counter()
            for (_, _, action), bucket in self._buckets.items():
                neighbours[action] += int(bucket.neighbour_used)
            return {"requests": dict(self.requests), "refused": dict(self.refused),
                    "neighbour_requests": {a: n for a, n in neighbours.items() if n}}

    def add_neighbour(self, account: str, region: str, action: str, share: float) -> None:
        """Another client of ``account`` uses ``share`` of ``action``'s refill rate from now on."""
        with self._lock:
            self._bucket(account, region, action).neighbour_share = share

    def start(self, port: int = 0) -> "ThrottleEmulator":
        """Serve from a thread of its own (for synchronous tests and benchmarks)."""
        started = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve(port))
            started.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="ec2-throttle", daemon=True).start()
        started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    # -- the proxy -----------------------------------------------------------------------

    async def serve(self, port: int = 0) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/_throttle/counts", self._counts)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _bucket(self, account: str, region: str, action: str) -> TokenBucket:
        key = (account, region, action)
        if key not in self._buckets:
            burst, rate = self.limits[action]
            self._buckets[key] = TokenBucket(burst, rate, burst, time.monotonic())
        return self._buckets[key]

    async def _counts(self, _: web.Request) -> web.Response:
        return web.json_response(self.counts())

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        action = parse_qs(body.decode("utf-8", "replace")).get("Action", ["?"])[0]
        scope = _SCOPE.search(request.headers.get("Authorization", ""))
        if scope is not None and scope["service"] == "ec2" and action in self.limits:
            with self._lock:
                granted = self._bucket(scope["key"], scope["region"], action).take(time.monotonic())
                self.requests[action] += 1
                if not granted:
                    self.refused[action] += 1
            if not granted:
                return web.Response(status=503, text=REFUSAL, content_type="text/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length", "transfer-encoding")}
        assert self._session is not None
        async with self._session.post(self.upstream + request.path_qs, data=body, headers=headers) as response:
            payload = await response.read()
            return web.Response(status=response.status, body=payload,
                                content_type=response.content_type or "text/xml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="moto server URL")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--neighbour", action="append", default=[], metavar="ACTION=SHARE",
                        help="a neighbour using SHARE of ACTION's rate (access key 'testing', region us-east-1)")
    args = parser.parse_args()
    emulator = ThrottleEmulator(args.upstream).start(args.port)
    for item in args.neighbour:
        action, share = item.split("=")
        emulator.add_neighbour("testing", "us-east-1", action, float(share))
    print(emulator.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
