"""Entry point of the async worker: HTTP adapters only.

``POST /`` is the Trigger subscriber for ``inference.requested`` (binary or structured
CloudEvents, or a Pub/Sub push envelope): it runs the slow model, stores the result, and
only then answers with an ``inference.completed`` reply, so a crash before that leaves the
event to the broker's retries. A job already ended is answered with an empty 202 (at-least-
once delivery). Errors answer 5xx, which the broker retries (a job store it cannot reach is a
503 with ``Retry-After``, raised by the store itself); ``POST /dead-letter`` receives
what it gave up on and marks the job failed with the reason. Both are ``auth="event"``: with
``EVENT_AUTH=oidc`` only the broker's token for this Service gets in (a Pub/Sub push carries
Google's: docs/security.md). ``GET /health``, ``/metadata``.
"""

from __future__ import annotations

import functools
import time

from flask import Request, Response

from functions.async_worker import logic
from functions.async_worker.settings import AsyncWorkerSettings
from functions.core import events, transport
from functions.core.cards import load_card
from functions.core.entry import entry_points, lazy_service
from functions.core.errors import ValidationFailed
from functions.core.event_auth import verifier_for
from functions.core.event_data import InferenceRequestedData
from functions.core.http import HttpApp, Route, json_response, read_limited, validate_model
from functions.core.jobstore import open_store
from functions.core.loading import ModelSlot
from functions.core.openapi import Operation
from functions.core.recording import Observer


class AsyncWorkerService:
    def __init__(self, settings: AsyncWorkerSettings) -> None:
        self.settings = settings
        self.store = open_store(settings.job_store_url, settings.job_ttl_seconds)
        self.slot = ModelSlot(settings.model_name, functools.partial(logic.load, settings))
        card = load_card(settings.model_cards, settings.model_name)
        logged = {"on_inference_requested"}  # the slow model's prediction, in the log too
        self.log = Observer(settings, card.name, card.version, logged)
        routes = [
            Route("/", "POST", self.on_inference_requested, Operation(
                "Run the slow model for an inference.requested CloudEvent (Trigger subscriber)",
                request=InferenceRequestedData), auth="event"),
            Route("/dead-letter", "POST", self.on_dead_letter, Operation(
                "Mark a job failed with the broker's reason (dead-letter sink)"), auth="event"),
            Route("/health", "GET", self.health, Operation(
                "Health (503 until the model is loaded)")),
            Route("/metadata", "GET", self.metadata, Operation("The slow model's metadata")),
        ]  # fmt: skip
        verifier = verifier_for(settings)
        verify = verifier.verify if verifier is not None else None
        self.app = HttpApp("async-worker", routes, observe=self.log, verify_event=verify)

    def close(self) -> None:
        """Close the job store (tests; a worker just exits)."""
        self.store.close()

    def _event(self, request: Request) -> tuple[events.CloudEvent, InferenceRequestedData]:
        body = read_limited(request, self.settings.max_body_bytes)
        self.log.entry(request).input = body  # the event as received
        event = transport.receive(dict(request.headers), body, push=True)
        if event["type"] != events.INFERENCE_REQUESTED:
            raise ValidationFailed(f"this subscriber takes {events.INFERENCE_REQUESTED}")
        return event, validate_model(InferenceRequestedData, event.data)

    def on_inference_requested(self, request: Request, rid: str) -> Response:
        entry = self.log.entry(request)
        entry.output = {}  # what an acknowledgement without a result (202) logs
        event, data = self._event(request)
        job = self.store.get(data.job_id)
        if job is None or job.seen_at(time.time()).status != "pending":
            return Response(status=202)  # expired, or ended already: nothing left to do
        model = self.slot.get()  # 503 while loading: the broker retries
        raw = logic.input_bytes(data, self.store)
        if raw is None:
            self.store.finish(data.job_id, "failed", event["id"], reason="the input expired")
            return Response(status=202)
        result = model.label(data.job_id, raw)
        self.store.finish(data.job_id, "done", event["id"], result=result.model_dump())
        entry.output = result.model_dump(include={"prediction", "proba"})
        entry.label = result.prediction
        reply = events.make(
            events.INFERENCE_COMPLETED,
            f"/{self.settings.k_service}",
            result.model_dump(),
            id=f"{event['id']}-completed",  # a redelivery replies with the same id
            **{events.JOB_ID: data.job_id},
        )
        headers, body = events.to_binary(reply)
        return Response(body, status=200, headers=headers)

    def on_dead_letter(self, request: Request, rid: str) -> Response:
        event, data = self._event(request)
        reason = logic.dead_letter_reason(events.attributes(event))
        self.store.finish(data.job_id, "failed", str(event["id"]), reason=reason)
        return Response(status=202)

    def warm(self) -> None:
        """Load and warm the slow model before taking traffic."""
        self.slot.load()

    def health(self, request: Request, rid: str) -> Response:
        self.slot.get()  # 503 until the model is loaded: readiness
        return json_response({"health": "ok"}, rid)

    def metadata(self, request: Request, rid: str) -> Response:
        card = self.slot.get().card
        meta = {"model": card.name, "version": card.version, "runtime": card.runtime}
        return json_response(meta | {"task": card.task, "description": card.description}, rid)


service = lazy_service(
    AsyncWorkerService, AsyncWorkerSettings, "async_worker", lambda s: {"model": s.model_name}
)
async_worker, warm = entry_points("async_worker", service)
