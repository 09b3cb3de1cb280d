"""Gateway: one loopback HTTP entry point doing what Knative's ingress (Istio) would do.

Routes by Host header (``<svc>.<ns>.<domain>``, ``<tag>-<svc>...``, a VirtualService host)
or by a path prefix ``/<name>/...`` for curl convenience, following ``routing.RouteTable``:
traffic split, tags, VirtualService rules, fault delay/abort and timeouts. Holds a request
for a revision with no ready replica (``activator``) and sends it to the least loaded one.
Enforces ``containerConcurrency`` per ready replica as Knative's queue-proxy does (in flight
up to the limit, a queue of ten times it, then 503) and ``timeoutSeconds`` (504). Passes
``X-Request-Id`` (making one when none came, as Envoy does) and ``traceparent`` through,
re-reads the manifests when they change (``reload``, driven by ``manifests.watch``) without
dropping requests, and lists its routes at ``GET /_routes``. Every listener is served through
``Gateway.runner``, which cuts off a client that sends its request head or body too slowly
(``emulators.deadlines``: 408). The path is routed and forwarded as it arrived,
percent-encoding untouched, as Envoy does.

One gateway serves two listeners, as a cluster has two ingresses: ``app(public=True)`` is
the public one (``knative-ingress-gateway``), which refuses cluster-local Services (labelled
``networking.knative.dev/visibility: cluster-local``) with a 404, as Knative's does, and
drops headers only the platform may set (``PLATFORM_HEADERS``) from what a client sent;
``app()`` is ``knative-local-gateway``, which the Services' own calls reach and which serves
every Service.

Every answer of its own is a problem+json (``problems`` also shapes aiohttp's routing and
body-limit errors and unexpected exceptions), with one exception: a request aiohttp's HTTP
parser rejects (a control character in a header, a request line or header over 8190 bytes,
an invalid method or version) is answered by aiohttp's protocol handler with a text/plain 400
before any application code runs, and aiohttp offers no hook for it (aio-libs/aiohttp#3287).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from emulators.activator import Activator, Revision
from emulators.deadlines import DeadlineRunner, ReadTimeouts
from emulators.problems import problem, problems, request_id
from emulators.routing import Decision, KService, NoRoute, RouteTable, Target
from emulators.serving_metrics import RequestCounts, ServingCollector, exposition
from emulators.upstream import Answer, Upstreams
from functions.core.errors import (
    FunctionError,
    GatewayTimeout,
    NotFound,
    RequestTimeout,
    ServiceUnavailable,
    error_for_status,
)

logger = logging.getLogger(__name__)

PUBLIC = web.AppKey("public", bool)
# Set by the routes and the platform's own Services, never taken from a client at the edge.
PLATFORM_HEADERS = frozenset({"x-ab-assignment"})

DOMAIN = "example.com"  # Knative's default domain; curl with -H "Host: iris.ml-serving.example.com"
CAPACITY_RECHECK = 0.25  # seconds a queued request waits before it looks for new replicas
REFUSED_PAUSE = 0.05  # between connects to a revision that refused one (the launcher restarts it)
# RFC 9110 §7.6.1 connection-specific fields, never forwarded by a proxy.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "content-length", "host",
}  # fmt: skip


class Queued(Protocol):
    queued: int


class Breaker:
    """queue-proxy's breaker for one revision: ``capacity()`` in flight (containerConcurrency
    per ready replica, as many as there are), ten times that waiting, the rest get 503."""

    def __init__(self, capacity: Callable[[], int], queue: Queued | None = None) -> None:
        """``queue``: where to count the waiting too (the revision: its autoscaler sees
        them, as queue-proxy reports requests queued in it)."""
        self.capacity, self._queue = capacity, queue
        self.in_flight = self.waiting = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @contextlib.asynccontextmanager
    async def slot(self) -> Any:
        if self.in_flight >= (capacity := self.capacity()):
            if self.waiting >= 10 * capacity:
                raise ServiceUnavailable(
                    f"over capacity: {self.in_flight} in flight and {self.waiting} queued"
                )
            self.waiting += 1
            if self._queue is not None:
                self._queue.queued += 1
            try:
                while self.in_flight >= self.capacity():
                    freed = asyncio.get_running_loop().create_future()
                    self._waiters.append(freed)
                    # a slot freed wakes one; a replica added (capacity up) is seen within
                    # CAPACITY_RECHECK
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(freed, CAPACITY_RECHECK)
            finally:
                self.waiting -= 1
                if self._queue is not None:
                    self._queue.queued -= 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            while self._waiters:
                if not (freed := self._waiters.popleft()).done():
                    freed.set_result(None)
                    break


class Gateway:
    def __init__(
        self,
        build_table: Callable[[], RouteTable],
        public_url: str,
        broker_url: str | None = None,
        max_body_bytes: int = 256 * 1024 * 1024,  # the functions set their own limits
        local_url: str | None = None,
        activator: Activator | None = None,
        timeouts: ReadTimeouts | None = None,
        issuer_url: str | None = None,
    ) -> None:
        """``public_url`` and ``local_url`` are where the two listeners are reached (the
        same where one listener serves both, as in the tests' in-process platform);
        ``activator`` holds requests for a revision until it is ready (None: they go at
        once, and one that is not listening is a 503); ``timeouts`` bound how long a client
        may take to send a request (``runner``); ``issuer_url``, the broker's token issuer,
        is listed with them."""
        self._build_table = build_table
        self.max_body_bytes, self.timeouts = max_body_bytes, timeouts or ReadTimeouts()
        self.table = build_table()
        self.public_url, self.broker_url = public_url.rstrip("/"), broker_url
        self.local_url = (local_url or public_url).rstrip("/")
        self.issuer_url = issuer_url
        self._breakers: dict[str, Breaker] = {}
        self.requests: RequestCounts = collections.Counter()
        self._collector = ServingCollector(self.requests, self._running)
        self._upstreams = Upstreams()
        self.activator = activator

    def reload(self) -> None:
        """Swap in routes from the manifests as they are now; requests in flight keep theirs."""
        self.table = self._build_table()

    def app(self, *, public: bool = False) -> web.Application:
        """The public listener's application, or (the default) the cluster-local one's,
        which also closes the upstream connections when it is cleaned up."""
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[problems])
        app[PUBLIC] = public
        app.router.add_get("/_routes", self._routes)
        if not public:
            app.router.add_get("/metrics", self._metrics)
        # [\s\S], not ".": aiohttp matches the decoded path, in which a %0A is a newline.
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._forward)
        if not public:
            app.cleanup_ctx.append(self._lifecycle)
        return app

    def runner(self, app: web.Application, **kwargs: Any) -> web.AppRunner:
        """How every listener of this gateway is served: ``app`` with the read deadlines
        (``kwargs`` go to aiohttp's ``AppRunner``)."""
        return DeadlineRunner(app, self.timeouts, **kwargs)

    async def _lifecycle(self, app: web.Application) -> Any:
        yield
        self._upstreams.close()
        if self.activator is not None:
            self.activator.close()

    # -- forwarding ---------------------------------------------------------------------

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        rid = request_id(request)
        public = request.app[PUBLIC]
        try:
            headers = {k.lower(): v for k, v in request.headers.items()}
            if public:
                headers = {k: v for k, v in headers.items() if k not in PLATFORM_HEADERS}
            path = request.rel_url.raw_path
            decision = self.table.decide(request.host, path, headers, public=public)
            return await self._send(request, decision, rid, public)
        except NoRoute as e:
            return problem(NotFound(str(e)), rid)
        except RequestTimeout as e:  # the rest of the body is not awaited on this connection
            response = problem(e, rid)
            response.force_close()
            return response
        except FunctionError as e:
            return problem(e, rid)

    async def _send(
        self, request: web.Request, decision: Decision, rid: str, public: bool
    ) -> web.StreamResponse:
        body = await self._read_body(request)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.abort is not None:
            raise error_for_status(decision.abort, f"fault injected by {decision.route}")
        # Expect was answered here already (aiohttp sends the 100 Continue itself).
        replaced = HOP_BY_HOP | {"x-request-id", "expect"} | {n for n, _ in decision.set_headers}
        if public:
            replaced |= PLATFORM_HEADERS
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in replaced]
        headers += [("X-Request-Id", rid), *decision.set_headers]  # the route's values win
        query = request.rel_url.raw_query_string
        path = decision.path + (f"?{query}" if query else "")
        key = (decision.service.name, decision.target.revision)
        try:
            # What the activator holds counts against containerConcurrency and its queue.
            async with self._breaker(decision.service, decision.target.revision).slot():
                upstream = await self._exchange(decision, request.method, path, headers, body)
        except FunctionError as e:
            self.requests[(*key, e.status)] += 1
            raise
        self.requests[(*key, upstream.status)] += 1
        out = [(k, v) for k, v in upstream.headers if k.lower() not in HOP_BY_HOP]  # repeats kept
        return web.Response(status=upstream.status, body=bytes(upstream.body), headers=out)

    async def _exchange(
        self,
        decision: Decision,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Answer:
        """The request on one replica of the decided revision: through the activator (held
        until a replica is ready), else on the revision's one fixed upstream."""
        target, name = decision.target, decision.service.name
        refused_since: float | None = None
        while True:
            replica = await self.activator.acquire(target.revision) if self.activator else None
            url = replica.url if replica else target.upstream
            if url is None:
                raise ServiceUnavailable(f"revision {target.revision} does not run locally")
            try:
                # timeoutSeconds counts from here, when a replica takes the request
                async with asyncio.timeout(decision.timeout):
                    return await self._upstreams.request(url, method, path, headers, body)
            except TimeoutError as e:
                raise GatewayTimeout(
                    f"{name} ({target.revision}) took longer than {decision.timeout:g}s"
                ) from e
            except ConnectionRefusedError as e:
                # It went away since its last probe; nothing was sent, so with an activator
                # the request waits for the restart, within the progress deadline.
                refused_since = refused_since or time.monotonic()
                waited = time.monotonic() - refused_since
                if self.activator is None or waited > self.activator.deadline(target.revision):
                    raise ServiceUnavailable(f"{name} ({target.revision}): {e}") from e
                await asyncio.sleep(REFUSED_PAUSE)
            except OSError as e:  # reset or closed mid-answer: the revision is not serving
                raise ServiceUnavailable(f"{name} ({target.revision}): {e}") from e
            finally:
                if replica is not None:
                    replica.end()

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            async with asyncio.timeout(self.timeouts.body):
                return await request.read()
        except TimeoutError as e:
            raise RequestTimeout(
                f"the request body did not arrive within {self.timeouts.body:g}s"
            ) from e

    def _breaker(self, service: KService, revision: str) -> Breaker:
        key = f"{revision}/{service.container_concurrency}"
        if key not in self._breakers:
            per_replica = service.container_concurrency or 1_000_000

            def capacity() -> int:
                found = self.activator.revision(revision) if self.activator else None
                return per_replica * max(found.replicas if found else 1, 1)

            queue = self.activator.revision(revision) if self.activator else None
            self._breakers[key] = Breaker(capacity, queue)
        return self._breakers[key]

    # -- routes and reloading -----------------------------------------------------------

    def _replicas(self, target: Target) -> dict[str, Any]:
        """What ``/_routes`` says of a traffic target's replicas."""
        revision = self.activator.revision(target.revision) if self.activator else None
        if revision is None:
            return {"upstream": target.upstream}
        picked = revision.pick()
        return {
            "upstream": picked.url if picked else None,
            "replica_urls": revision.replica_urls,  # ready or starting, as Endpoints lists
            "replicas": revision.replicas,
            "desired": revision.desired,
            "in_flight": revision.in_flight,
            "held": revision.held,
            "cold_start_seconds": revision.cold_start,
        }

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        """The platform's series, unless the Host names a Service: then its own /metrics."""
        try:
            self.table.locate(request.host, request.rel_url.raw_path)
        except NoRoute:
            body = exposition(self._collector)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        return await self._forward(request)

    def _running(self) -> dict[str, tuple[str, Revision]]:
        if self.activator is None:
            return {}
        names = ((s.name, t.revision) for s in self.table.services.values() for t in s.targets)
        return self.activator.revisions(names)

    async def _routes(self, request: web.Request) -> web.Response:
        return web.json_response(self.describe(), dumps=lambda o: orjson.dumps(o).decode())

    def describe(self) -> dict[str, Any]:
        services: list[dict[str, Any]] = []
        for name in self.table.names():
            entry: dict[str, Any] = {"name": name, "url": f"{self.public_url}/{name}"}
            if name in self.table.services:
                svc = self.table.services[name]
                entry["host"] = f"{name}.{svc.namespace}.{DOMAIN}"
                if svc.cluster_local:  # reached through the cluster-local gateway only
                    entry["url"] = f"{self.local_url}/{name}"
                    entry["host"] = f"{name}.{svc.namespace}.svc.cluster.local"
                entry["visibility"] = "cluster-local" if svc.cluster_local else "public"
                entry["traffic"] = [
                    {
                        "revision": t.revision,
                        "tag": t.tag,
                        "percent": t.percent,
                        "latest_revision": t.latest,
                        **self._replicas(t),
                    }
                    for t in (self.table.resolve(name, t) for t in svc.targets)
                ]
                entry["rules"] = []
            else:
                vs = self.table.virtual[name]
                entry["host"] = vs.hosts[0] if vs.hosts else f"{name}.{vs.namespace}.{DOMAIN}"
                entry["visibility"] = "public" if vs.public else "mesh"
                if not vs.public:
                    entry["url"] = f"{self.local_url}/{name}"
                entry["traffic"] = []
                entry["rules"] = [
                    {
                        "name": rule.name,
                        "match": [
                            {"headers": {h: {m.kind: m.value} for h, m in match.headers}}
                            | ({"uri": {match.uri.kind: match.uri.value}} if match.uri else {})
                            for match in rule.matches
                        ],
                        "route": [
                            {"service": d.service, "weight": d.weight} for d in rule.destinations
                        ],
                    }
                    for rule in vs.rules
                ]
            services.append(entry)
        return {
            "services": services,
            "broker": {"url": self.broker_url},
            "cluster_local_gateway": {"url": self.local_url},
            "issuer": {"url": self.issuer_url},
        }
