"""Entry point of the sync-async proxy: HTTP adapters only.

``POST /predict`` (and ``GET /predict/test``) answer the fast model's label at once and
queue the slow model's work as an ``inference.requested`` event; ``GET /job/<job_id>`` reads
the job; ``/health``, ``/health/all``, ``/metadata``. See docs/sync-async.md.
"""

from __future__ import annotations

import base64
import time

from flask import Request, Response

from functions.core import transport
from functions.core.cards import load_card
from functions.core.client import Client
from functions.core.codecs import ImageRequest
from functions.core.entry import entry_points, lazy_service
from functions.core.errors import BadRequest, FunctionError, NotFound, ServiceUnavailable
from functions.core.http import HttpApp, Route, json_response, parse_model, read_body
from functions.core.jobstore import open_store
from functions.core.openapi import Operation
from functions.core.preprocessing import decode_base64
from functions.core.recording import Observer
from functions.sync_async import logic
from functions.sync_async.settings import SyncAsyncSettings


class SyncAsyncService:
    def __init__(self, settings: SyncAsyncSettings) -> None:
        self.settings = settings
        self.store = open_store(settings.job_store_url, settings.job_ttl_seconds)
        self.client = Client(cluster_local_gateway=settings.cluster_local_gateway)
        self.events = transport.sink_for(settings, self.client)
        card = load_card(settings.model_cards, settings.fast_model)
        assert card.sample is not None
        assert card.sample.image is not None
        self.sample = (settings.model_dir / card.sample.image).read_bytes()
        logged = {"predict", "predict_test"}  # the proxy's own hop in the prediction log
        self.log = Observer(settings, "sync-async", settings.k_revision, logged)
        routes = [
            Route("/health", "GET", self.health, Operation("Health of the proxy")),
            Route("/health/all", "GET", self.health_all, Operation(
                "Each model, the job store and the event sink: ok or the reason")),
            Route("/metadata", "GET", self.metadata, Operation("Both models' metadata")),
            Route("/predict", "POST", self.predict, Operation(
                "Fast answer now, a job for the slow model", request=ImageRequest)),
            Route("/predict/test", "GET", self.predict_test, Operation(
                "The same with the sample image")),
            Route("/job/<job_id>", "GET", self.job, Operation("A job: pending, done or failed")),
        ]  # fmt: skip
        self.app = HttpApp("sync-async", routes, observe=self.log, strict_slashes=False)

    def close(self) -> None:
        """Close the job store and the kept connections (tests; a worker just exits)."""
        self.store.close()
        self.client.close()

    def health(self, request: Request, rid: str) -> Response:
        return json_response({"health": "ok"}, rid)

    def health_all(self, request: Request, rid: str) -> Response:
        fast = (self.settings.fast_model, self._health(self.settings.fast_url, rid, request))
        slow = (self.settings.slow_model, self._health(self.settings.slow_url, rid, request))
        body = logic.health_all(fast, slow, self.store.ping(), self.events.health())
        return json_response(body, rid)

    def metadata(self, request: Request, rid: str) -> Response:
        fast = self._get(self.settings.fast_url + "/metadata", rid, request)
        slow = self._get(self.settings.slow_url + "/metadata", rid, request)
        return json_response({self.settings.fast_model: fast, self.settings.slow_model: slow}, rid)

    def predict(self, request: Request, rid: str) -> Response:
        received = self.log.entry(request).received
        raw = read_body(request, self.settings.max_body_bytes, received=received)
        image = parse_model(ImageRequest, raw)
        return self._accept(decode_base64(image.image_data), rid, request)

    def predict_test(self, request: Request, rid: str) -> Response:
        self.log.entry(request).input = "sample"
        return self._accept(self.sample, rid, request)

    def job(self, request: Request, rid: str) -> Response:
        job_id = str((request.view_args or {})["job_id"])
        found = self.store.get(job_id)
        if found is None:
            raise NotFound(f"no job {job_id} (unknown, or its result expired)")
        return json_response(logic.job_body(found, time.time(), self.settings.slow_model), rid)

    def _accept(self, raw: bytes, rid: str, request: Request) -> Response:
        """Fast answer first (its failure creates no job), then the job, then the event."""
        s = self.settings
        payload = {"image_data": base64.b64encode(raw).decode()}
        answer = self.client.call(
            "POST", s.fast_url + "/predict/label", rid, seconds=s.backend_timeout,
            incoming=request.headers, json=payload,
        )  # fmt: skip
        label = logic.fast_label(answer.status, logic.parse_json(answer.body))
        job = logic.new_job(rid, s.fast_model, label, time.time(), s.job_deadline_seconds)
        if not self.store.create(job):
            raise BadRequest(f"job {rid} exists already: send a new X-Request-Id")
        event, blob = logic.request_event(rid, raw, s.inline_max_bytes, f"/{s.k_service}")
        try:
            if blob is not None:
                self.store.put_blob(rid, blob)
            self.events.publish(event)
        except ServiceUnavailable as e:
            self.store.finish(rid, "failed", str(event["id"]), reason=f"not queued: {e.detail}")
            raise
        fast = {s.fast_model: label}
        self.log.entry(request).output = fast  # the proxy's hop in the log: the fast answer
        return json_response({"job_id": rid, **fast}, rid)

    def _health(self, url: str, rid: str, request: Request) -> str:
        try:
            status = self.client.call(
                "GET", url + "/health", rid, seconds=2.0, incoming=request.headers
            ).status
        except FunctionError as e:
            return e.detail
        return "ok" if status == 200 else f"answered {status}"

    def _get(self, url: str, rid: str, request: Request) -> object:
        seconds = self.settings.backend_timeout
        response = self.client.call("GET", url, rid, seconds=seconds, incoming=request.headers)
        if response.status != 200:
            raise ServiceUnavailable(f"{url} answered {response.status}")
        return logic.parse_json(response.body)


service = lazy_service(SyncAsyncService, SyncAsyncSettings, "sync_async")
sync_async, warm = entry_points("sync_async", service)
