"""Where a function's events go: ``K_SINK`` over HTTP (Knative), or a Google Cloud Pub/Sub topic.

``publisher(kind, ...)`` picks one by a setting; both take a CloudEvent and raise a 503
problem when it could not be handed over. Over HTTP the event travels in binary mode (the
Broker answers 202). Over Pub/Sub it follows the CloudEvents Pub/Sub binding: the data is
the message body, every attribute a ``ce-`` message attribute. A push subscription hands
the message to a subscriber; ``from_push`` turns its envelope back into a binary-mode HTTP
message that ``events.parse`` reads, so subscribers need not know which transport ran.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import httpx
import orjson

from functions.core import events
from functions.core.client import pooled_client
from functions.core.errors import ServiceUnavailable

Transport = Literal["http", "pubsub"]


class Publisher(Protocol):
    def publish(self, event: events.CloudEvent) -> None: ...

    def health(self) -> str:
        """``ok`` or the reason events cannot be sent."""
        ...


class HttpPublisher:
    def __init__(self, sink: str, seconds: float = 5.0, client: httpx.Client | None = None):
        self.sink, self.seconds, self._client = sink, seconds, client

    def publish(self, event: events.CloudEvent) -> None:
        headers, body = events.to_binary(event)
        if jobid := event.get(events.JOB_ID):
            headers["X-Request-Id"] = str(jobid)
        try:
            response = (self._client or pooled_client()).post(
                self.sink, content=body, headers=headers, timeout=self.seconds
            )
        except httpx.TransportError as e:
            raise ServiceUnavailable(f"event sink {self.sink}: {type(e).__name__}") from e
        if not 200 <= response.status_code < 300:
            raise ServiceUnavailable(f"event sink {self.sink} answered {response.status_code}")

    def health(self) -> str:
        try:  # an ingress takes POST only: any answer below 500 means it is there
            status = (self._client or pooled_client()).get(self.sink, timeout=2.0).status_code
        except httpx.TransportError as e:
            return f"unreachable: {type(e).__name__}"
        return "ok" if status < 500 else f"answered {status}"


class PubSubPublisher:
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

    def health(self) -> str:
        try:
            self._client.get_topic(topic=self.topic, timeout=2.0)
        except Exception as e:
            return f"Pub/Sub topic {self.topic}: {type(e).__name__}"
        return "ok"


def publisher(
    kind: Transport, *, sink: str | None, project: str | None, topic: str | None
) -> Publisher:
    """The publisher a function's settings select."""
    if kind == "pubsub":
        if not (project and topic):
            raise ValueError("the pubsub transport needs a project and a topic")
        return PubSubPublisher(project, topic)
    if not sink:
        raise ValueError("the http transport needs K_SINK (a SinkBinding sets it)")
    return HttpPublisher(sink)


def is_push(headers: Mapping[str, str], body: bytes) -> bool:
    """Whether a request is a Pub/Sub push envelope (``{"message": ..., "subscription": ...}``)."""
    return not events.is_event(headers) and body.startswith(b"{") and b'"subscription"' in body


def from_push(body: bytes) -> tuple[dict[str, str], bytes]:
    """Binary-mode CloudEvent headers and body from a Pub/Sub push envelope."""
    envelope: dict[str, Any] = orjson.loads(body)
    message = envelope.get("message") or {}
    attributes: dict[str, str] = message.get("attributes") or {}
    headers = {k: v for k, v in attributes.items() if k.startswith("ce-")}
    if "content-type" in attributes:
        headers["content-type"] = attributes["content-type"]
    return headers, base64.b64decode(message.get("data", ""))
