"""Every path of an event to its sink, and back out of a delivery: the one event transport.

A function's events go to ``K_SINK`` over HTTP (Knative: a SinkBinding sets it to the
Broker), or to a Google Cloud Pub/Sub topic; ``sink_for(settings)`` picks one by the
``EVENT_TRANSPORT`` setting. Both sinks take an event two ways, with one contract: raise a
503 problem when it could not be handed over, ``Refused`` (a 503 too) when it never will be.

- ``publish(event)``: a CloudEvent built in the request (the sync-async proxy's job).
- ``send(line)``: one structured-mode event as JSON text (what ``core.outbox`` spooled).

Over HTTP an event travels in structured mode (``application/cloudevents+json``) over the
process's ``core.client``, both ways; the Broker answers 202. Over Pub/Sub it follows the
CloudEvents Pub/Sub binding: the data is the message body, every attribute a ``ce-`` message
attribute. A push subscription hands the message to a subscriber as a JSON envelope;
``receive`` reads an event from any delivery (binary or structured HTTP, or that envelope
where the subscriber takes one), so subscribers need not know which transport ran.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from functions.core import events
from functions.core.client import Client
from functions.core.errors import BadRequest, ServiceUnavailable
from functions.core.http import REQUEST_ID_HEADER
from functions.core.settings import EventSettings

STRUCTURED = "application/cloudevents+json"
# The 4xx a sink may answer while it starts or is busy, which Knative retries too; any other
# 4xx is the event's fault, and sending it again cannot help.
TRANSIENT_4XX = frozenset({404, 408, 409, 429})


class Refused(ServiceUnavailable):
    """The sink refused this event for good (too large, not a valid CloudEvent): a retry of
    the same bytes is refused the same way."""


class Sink(Protocol):
    def publish(self, event: events.CloudEvent) -> None:
        """Hand over one CloudEvent; a 503 problem when the sink did not take it."""

    def send(self, line: bytes) -> None:
        """Hand over one structured-mode event (JSON text); a 503 problem as ``publish``."""

    def health(self) -> str:
        """``ok`` or the reason events cannot be sent."""
        ...


class HttpSink:
    """POST each event in structured mode to ``url`` (``K_SINK``) over keep-alive connections.

    Sending is most of what a logged prediction costs the Service's pod, so a spooled line
    goes out as it is: one prebuilt request, no parse and no SDK."""

    def __init__(self, url: str, client: Client, seconds: float = 5.0) -> None:
        self.url, self.client, self.seconds = url, client, seconds

    def publish(self, event: events.CloudEvent) -> None:
        self._post(events.to_structured(event), event.get(events.JOB_ID))

    def send(self, line: bytes) -> None:
        self._post(line, None)

    def _post(self, body: bytes, job_id: object) -> None:
        headers = {"Content-Type": STRUCTURED}
        if job_id:
            headers[REQUEST_ID_HEADER] = str(job_id)
        try:
            reply = self.client.request(
                "POST", self.url, timeout=self.seconds, headers=headers, body=body
            )
        except OSError as e:
            raise ServiceUnavailable(f"event sink {self.url}: {type(e).__name__}") from e
        if 200 <= reply.status < 300:
            return
        said = f"event sink {self.url} answered {reply.status}"
        if 400 <= reply.status < 500 and reply.status not in TRANSIENT_4XX:
            raise Refused(f"{said}: {reply.body[:200].decode(errors='replace')}")
        raise ServiceUnavailable(said)

    def health(self) -> str:
        try:  # an ingress takes POST only: any answer below 500 means it is there
            status = self.client.request("GET", self.url, timeout=2.0).status
        except OSError as e:
            return f"unreachable: {type(e).__name__}"
        return "ok" if status < 500 else f"answered {status}"


class PubSubSink:
    """google-cloud-pubsub; ``PUBSUB_EMULATOR_HOST`` in the environment selects the emulator."""

    def __init__(self, project: str, topic: str, seconds: float = 10.0) -> None:
        from google.cloud import pubsub_v1  # type: ignore[import-untyped]

        self._client = pubsub_v1.PublisherClient()
        self.topic = self._client.topic_path(project, topic)
        self.seconds = seconds

    def publish(self, event: events.CloudEvent) -> None:
        attributes = {f"ce-{k}": str(v) for k, v in events.attributes(event).items()}
        if "ce-datacontenttype" in attributes:  # the binding's name for it
            attributes["content-type"] = attributes.pop("ce-datacontenttype")
        data = event.data if isinstance(event.data, bytes) else orjson.dumps(event.data)
        try:
            self._client.publish(self.topic, data, **attributes).result(timeout=self.seconds)
        except Exception as e:  # the client raises google.api_core errors and timeouts
            raise ServiceUnavailable(f"Pub/Sub topic {self.topic}: {type(e).__name__}") from e

    def send(self, line: bytes) -> None:
        self.publish(events.from_structured(orjson.loads(line)))

    def health(self) -> str:
        try:
            self._client.get_topic(topic=self.topic, timeout=2.0)
        except Exception as e:
            return f"Pub/Sub topic {self.topic}: {type(e).__name__}"
        return "ok"


def sink_for(settings: EventSettings, client: Client | None = None) -> Sink:
    """The sink the settings select: ``K_SINK`` over HTTP (over ``client``, else a client of
    its own), or the Pub/Sub topic."""
    if settings.event_transport == "pubsub":
        if not (settings.pubsub_project and settings.pubsub_topic):
            raise ValueError("the pubsub transport needs a project and a topic")
        return PubSubSink(settings.pubsub_project, settings.pubsub_topic)
    if not settings.k_sink:
        raise ValueError("the http transport needs K_SINK (a SinkBinding sets it)")
    return HttpSink(
        settings.k_sink, client or Client(cluster_local_gateway=settings.cluster_local_gateway)
    )


def receive(headers: Mapping[str, str], body: bytes, *, push: bool = False) -> events.CloudEvent:
    """The CloudEvent a delivery carries: binary or structured HTTP, or with ``push`` also a
    Pub/Sub push envelope (``{"message": ..., "subscription": ...}``); 400 if none."""
    if push and _is_push(headers, body):
        headers, body = _from_push(body)
    return events.parse(headers, body)


def _is_push(headers: Mapping[str, str], body: bytes) -> bool:
    return not events.is_event(headers) and body.startswith(b"{") and b'"subscription"' in body


def _from_push(body: bytes) -> tuple[dict[str, str], bytes]:
    """Binary-mode CloudEvent headers and body from a Pub/Sub push envelope."""
    try:
        envelope: dict[str, Any] = orjson.loads(body)
        message = envelope.get("message") or {}
        attributes: dict[str, str] = message.get("attributes") or {}
        data = base64.b64decode(message.get("data", ""), validate=True)
    except (ValueError, AttributeError, TypeError) as e:
        raise BadRequest(f"not a Pub/Sub push envelope: {e}") from e
    headers = {k: v for k, v in attributes.items() if k.startswith("ce-")}
    if "content-type" in attributes:
        headers["content-type"] = attributes["content-type"]
    return headers, data
