"""Broker: the Knative Eventing broker, locally, read from eventing/ manifests.

CloudEvents ingress at ``/<namespace>/<broker>`` (binary or structured mode) answers 202, or
413 for an event over ``max_event_bytes`` (no subscriber should get what no one can take),
and fans each event out to every Trigger whose filter matches (``filter.attributes``, or
``filters`` with exact/prefix/suffix/all/any/not). Delivery follows the Trigger's, else the
Broker's, ``delivery``: ``retry`` attempts with linear or exponential ``backoffDelay`` on the
statuses Knative retries (5xx, 404, 408, 409, 429, network errors), then the dead-letter
sink with ``knativeerror*`` extensions. Each backoff is jittered (``jitter``, +/- a share of
it): Knative's dispatcher waits exactly, but the local broker need not make every event that
failed in one outage come back in one wave. A 2xx whose body is neither empty nor a CloudEvent is
a failed delivery, as behind the real broker. A CloudEvent reply re-enters the broker with
``knativebrokerttl`` decremented; at zero it is dropped, which cuts reply loops.
``time_scale`` shrinks every backoff so tests need not wait for real ones. With an
``issuer`` (``emulators/oidc.py``), every delivery carries ``Authorization: Bearer`` with a
token of the Trigger's OIDC identity for its destination's audience (the Destination's
``audience:``, else its ref's), as Knative's ``authentication-oidc`` does.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from emulators.durations import iso_seconds
from emulators.manifests import Resource
from emulators.oidc import Issuer, destination_audience, trigger_subject
from emulators.problems import problem, problems
from functions.core import events
from functions.core.errors import BadRequest, FunctionError, NotFound, PayloadTooLarge

# Its own generator: the jitter must not draw from (or move) the global random state.
_JITTER = random.Random()
logger = logging.getLogger(__name__)

BROKER = ("eventing.knative.dev/v1", "Broker")
TRIGGER = ("eventing.knative.dev/v1", "Trigger")
RETRYABLE = {404, 408, 409, 429}
TTL = "knativebrokerttl"

Filter = Callable[[Mapping[str, Any]], bool]
Resolve = Callable[[Mapping[str, Any]], str]  # a Destination (ref and/or uri) -> URL


@dataclass(frozen=True)
class Delivery:
    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: float = 0.2
    dead_letter: str | None = None
    timeout: float = 30.0
    dead_letter_audience: str | None = None

    def backoff(self, retry_number: int) -> float:
        """Knative's schedule: linear delay*n, exponential delay*2^n (n = 1, 2, ...)."""
        if self.backoff_policy == "linear":
            return self.backoff_delay * retry_number
        return self.backoff_delay * float(2**retry_number)


def delivery_of(
    spec: Mapping[str, Any] | None, resolve: Resolve, base: Delivery, namespace: str
) -> Delivery:
    if not spec:
        return base
    sink = in_namespace(spec["deadLetterSink"], namespace) if "deadLetterSink" in spec else None
    return Delivery(
        retry=int(spec.get("retry", base.retry)),
        backoff_policy=spec.get("backoffPolicy", base.backoff_policy),
        backoff_delay=iso_seconds(spec["backoffDelay"])
        if "backoffDelay" in spec
        else base.backoff_delay,
        dead_letter=resolve(sink) if sink else base.dead_letter,
        timeout=iso_seconds(spec["timeout"]) if "timeout" in spec else base.timeout,
        dead_letter_audience=destination_audience(sink) if sink else base.dead_letter_audience,
    )


def in_namespace(destination: Mapping[str, Any], namespace: str) -> Mapping[str, Any]:
    """A Destination whose ``ref`` names no namespace refers to its own resource's."""
    ref = destination.get("ref")
    if ref is None or "namespace" in ref:
        return destination
    return {**destination, "ref": {**ref, "namespace": namespace}}


def compile_filters(trigger: Mapping[str, Any]) -> Filter:
    """``filters`` (the newer dialects, ANDed) win over ``filter.attributes`` (exact, "" = any)."""
    if trigger.get("filters"):
        parts = [_dialect(f) for f in trigger["filters"]]
        return lambda attrs: all(p(attrs) for p in parts)
    wanted = trigger.get("filter", {}).get("attributes", {})
    return lambda attrs: all(v == "" or str(attrs.get(k)) == v for k, v in wanted.items())


def _dialect(spec: Mapping[str, Any]) -> Filter:
    ((kind, value),) = spec.items()
    if kind in ("exact", "prefix", "suffix"):
        test: Callable[[str, str], bool] = {
            "exact": lambda a, b: a == b,
            "prefix": str.startswith,
            "suffix": str.endswith,
        }[kind]
        return lambda attrs: all(k in attrs and test(str(attrs[k]), v) for k, v in value.items())
    if kind in ("all", "any"):
        parts = [_dialect(f) for f in value]
        combine = all if kind == "all" else any
        return lambda attrs: combine(p(attrs) for p in parts)
    if kind == "not":
        inner = _dialect(value)
        return lambda attrs: not inner(attrs)
    raise ValueError(f"filter dialect {kind!r} is not supported by the local broker")


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    broker: str
    matches: Filter
    subscriber: str
    delivery: Delivery
    audience: str | None = None  # the subscriber's
    subject: str = ""  # the Trigger's OIDC identity, the tokens' sub


@dataclass(frozen=True)
class Topology:
    brokers: dict[str, Delivery]  # "<namespace>/<name>" -> its delivery
    triggers: tuple[TriggerSpec, ...]

    @classmethod
    def build(cls, resources: list[Resource], resolve: Resolve) -> Topology:
        brokers = {}
        for r in resources:
            if r.key == BROKER:
                namespace = r.doc["metadata"].get("namespace", "default")
                brokers[f"{namespace}/{r.name}"] = delivery_of(
                    r.doc.get("spec", {}).get("delivery"), resolve, Delivery(), namespace
                )
        triggers = []
        for r in resources:
            if r.key != TRIGGER:
                continue
            spec, namespace = r.doc["spec"], r.doc["metadata"].get("namespace", "default")
            key = f"{namespace}/{spec['broker']}"
            base = brokers.get(key, Delivery())
            subscriber = in_namespace(spec["subscriber"], namespace)
            triggers.append(
                TriggerSpec(
                    r.name,
                    key,
                    compile_filters(spec),
                    resolve(subscriber),
                    delivery_of(spec.get("delivery"), resolve, base, namespace),
                    destination_audience(subscriber),
                    trigger_subject(namespace, r.name),
                )
            )
        return cls(brokers, tuple(triggers))


class Broker:
    def __init__(
        self,
        build: Callable[[], Topology],
        time_scale: float = 1.0,
        ttl: int = 255,
        grace: float = 10.0,
        jitter: float = 0.25,
        max_event_bytes: int = 4 * 1024 * 1024,
        issuer: Issuer | None = None,
    ) -> None:
        """``grace``: how long a graceful stop waits for the deliveries of accepted events;
        ``issuer``: who signs the deliveries' tokens (None: they carry none)."""
        self._build, self.issuer = build, issuer
        self.topology = build()
        self.time_scale, self.ttl, self.grace = time_scale, ttl, grace
        self.jitter, self.max_event_bytes = jitter, max_event_bytes
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        # aiohttp's own limit answers past it as our ingress would: a 413 problem.
        app = web.Application(client_max_size=self.max_event_bytes, middlewares=[problems])
        app.router.add_get("/_stats", self._stats)
        app.router.add_post("/{namespace}/{broker}", self._ingress)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    def reload(self) -> None:
        self.topology = self._build()

    async def drain(self, seconds: float) -> bool:
        """Wait for the deliveries in flight or backing off, and for those their replies
        start; False when some are still going after ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        return not self._tasks

    async def _lifecycle(self, app: web.Application) -> Any:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        yield
        # The ingress is closed by now (aiohttp stops the site before cleanup): every event
        # it accepted gets its deliveries, retries included, within the grace period.
        if not await self.drain(self.grace):
            given_up = sorted(task.get_name() for task in self._tasks)
            logger.warning(
                "stopping: %d deliveries still retrying after %gs are lost: %s",
                len(given_up), self.grace, ", ".join(given_up),
            )  # fmt: skip
            self.stats["lost"] += len(given_up)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.stats, "in_flight": len(self._tasks)})

    async def _ingress(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['namespace']}/{request.match_info['broker']}"
        rid = request.headers.get("X-Request-Id", "")
        try:
            if key not in self.topology.brokers:
                raise NotFound(f"no Broker {key}")
            if (request.content_length or 0) > self.max_event_bytes:
                raise PayloadTooLarge(
                    f"an event of {request.content_length} bytes: this broker takes at most "
                    f"{self.max_event_bytes}"
                )
            event = events.parse(request.headers, await request.read())
        except FunctionError as e:
            self.stats["rejected"] += 1
            return problem(e, rid)
        self.accept(key, event)
        return web.Response(status=202)

    def accept(self, broker: str, event: events.CloudEvent) -> None:
        attrs = events.attributes(event)
        ttl = int(attrs.get(TTL, self.ttl))
        if ttl <= 0:
            self.stats["dropped_ttl"] += 1
            logger.warning("event %s dropped: %s exhausted (a reply loop?)", attrs["id"], TTL)
            return
        event[TTL] = str(ttl)
        self.stats["accepted"] += 1
        for trigger in self.topology.triggers:
            if trigger.broker == broker and trigger.matches(attrs):
                copy = events.copy(event)  # each delivery adds its own extensions
                task = asyncio.get_running_loop().create_task(
                    self._deliver(broker, trigger, copy), name=f"{attrs['id']} to {trigger.name}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, broker: str, trigger: TriggerSpec, event: events.CloudEvent) -> None:
        policy = trigger.delivery
        status, detail = 0, ""
        for attempt in range(policy.retry + 1):
            if attempt:
                self.stats["retries"] += 1
                spread = _JITTER.uniform(1 - self.jitter, 1 + self.jitter)
                await asyncio.sleep(policy.backoff(attempt) * spread * self.time_scale)
            token = self._token(trigger.audience, trigger)
            status, detail, reply = await self._post(
                trigger.subscriber, event, policy.timeout, token
            )
            if 200 <= status < 300 and detail == "":
                self.stats["delivered"] += 1
                if reply is not None:
                    self.stats["replies"] += 1
                    reply[TTL] = str(int(event[TTL]) - 1)
                    self.accept(broker, reply)
                return
            if not (status == 0 or status >= 500 or status in RETRYABLE or 200 <= status < 300):
                break  # a permanent failure: retrying cannot help
        await self._dead_letter(trigger, event, status, detail)

    def _token(self, audience: str | None, trigger: TriggerSpec) -> str | None:
        """A fresh token for one attempt (a retry's own), or None without issuer or audience."""
        if self.issuer is None or audience is None:
            return None
        return self.issuer.token(audience, trigger.subject)

    async def _post(
        self, url: str, event: events.CloudEvent, seconds: float, token: str | None
    ) -> tuple[int, str, events.CloudEvent | None]:
        """(status, failure detail or "", reply event); status 0 for a network error."""
        headers, body = events.to_binary(event)
        if jobid := event.get(events.JOB_ID):
            headers["X-Request-Id"] = str(jobid)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        assert self._session is not None
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds)
            ) as response:
                payload = await response.read()
                if not 200 <= response.status < 300:
                    return response.status, payload[:1024].decode(errors="replace"), None
                if events.is_event(response.headers):
                    return response.status, "", events.parse(response.headers, payload)
                if payload.strip():
                    return (
                        response.status,
                        f"2xx with a body that is not a CloudEvent: {payload[:64]!r}",
                        None,
                    )
                return response.status, "", None
        except BadRequest as e:
            return 502, f"invalid CloudEvent reply: {e.detail}", None
        except (aiohttp.ClientError, TimeoutError) as e:
            return 0, f"{type(e).__name__}: {e}", None

    async def _dead_letter(
        self, trigger: TriggerSpec, event: events.CloudEvent, status: int, detail: str
    ) -> None:
        sink = trigger.delivery.dead_letter
        logger.warning(
            "delivery of %s to %s failed (%s %s)", event["id"], trigger.name, status, detail
        )
        if sink is None:
            self.stats["lost"] += 1
            return
        # The extensions Knative adds to a dead-lettered event.
        event["knativeerrordest"] = trigger.subscriber
        event["knativeerrorcode"] = str(status)
        event["knativeerrordata"] = base64.b64encode(detail.encode()[:1024]).decode()
        token = self._token(trigger.delivery.dead_letter_audience, trigger)
        sent, sink_detail, _ = await self._post(sink, event, trigger.delivery.timeout, token)
        if 200 <= sent < 300 and not sink_detail:
            self.stats["dead_lettered"] += 1
            return
        self.stats["lost"] += 1
        logger.warning(
            "event %s lost: its dead-letter sink %s did not take it either (%s %s)",
            event["id"], sink, sent, sink_detail,
        )  # fmt: skip


SINK_BINDING = ("sources.knative.dev/v1", "SinkBinding")


def local_resolver(gateway_url: str, broker_url: str) -> Resolve:
    """Resolve a Knative Destination locally: a Broker ref to this broker's ingress, a
    Service ref to its route on the gateway (plus a relative ``uri``), an absolute ``uri`` as is."""

    def resolve(destination: Mapping[str, Any]) -> str:
        ref, uri = destination.get("ref"), str(destination.get("uri", ""))
        if ref is None:
            return uri
        namespace = ref.get("namespace", "default")
        if ref["kind"] == "Broker":
            return f"{broker_url}/{namespace}/{ref['name']}"
        return f"{gateway_url}/{ref['name']}{uri}"

    return resolve


def sink_bindings(resources: list[Resource], resolve: Resolve) -> dict[str, str]:
    """``K_SINK`` per Knative Service name, from the SinkBindings whose subject it is
    (by name, or by ``selector.matchLabels`` against the Service's labels)."""
    services = {r.name: r for r in resources if r.key == ("serving.knative.dev/v1", "Service")}
    sinks: dict[str, str] = {}
    for r in resources:
        if r.key != SINK_BINDING:
            continue
        namespace = r.doc["metadata"].get("namespace", "default")
        subject = r.doc["spec"]["subject"]
        url = resolve(in_namespace(r.doc["spec"]["sink"], namespace))
        if "name" in subject:
            sinks[subject["name"]] = url
            continue
        wanted = subject.get("selector", {}).get("matchLabels", {})
        for name, service in services.items():
            labels = service.doc["metadata"].get("labels", {})
            if all(labels.get(k) == v for k, v in wanted.items()):
                sinks[name] = url
    return sinks
