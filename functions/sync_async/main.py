"""Entry point of the sync-async proxy: HTTP adapters only.

``POST /predict`` (and ``GET /predict/test``) answer the fast model's label at once and
queue the slow model's work as an ``inference.requested`` event; ``GET /job/<job_id>`` reads
the job; ``/health``, ``/health/all``, ``/metadata``. See docs/sync-async.md.
"""

from __future__ import annotations

import base64
import logging
import time

from flask import Request, Response

from functions.core import transport
from functions.core.cards import load_card
from functions.core.client import Client
from functions.core.codecs import ImageRequest
from functions.core.entry import entry_points, lazy_service
from functions.core.errors import FunctionError, NotFound, ServiceUnavailable
from functions.core.http import HttpApp, Route, json_response, parse_model, read_body
from functions.core.jobstore import RETRY_AFTER_SECONDS, StoreUnavailable, open_store
from functions.core.openapi import Operation
from functions.core.preprocessing import decode_base64
from functions.core.recording import Observer
from functions.sync_async import logic
from functions.sync_async.settings import SyncAsyncSettings

logger = logging.getLogger(__name__)
STORE_SINCE_HEADER = "Job-Store-Since"  # when the job store started empty (RFC 3339, UTC)


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
            since = self.store.since()
            detail = logic.unknown_job(job_id, since, time.time(), self.settings.job_ttl_seconds)
            headers = {STORE_SINCE_HEADER: logic.iso_time(since)} if since is not None else {}
            raise NotFound(detail, headers=headers)
        return json_response(logic.job_body(found, time.time(), self.settings.slow_model), rid)

    def _accept(self, raw: bytes, rid: str, request: Request) -> Response:
        """Accept one job, ordered so that a failure half-way leaves nothing a retry with the
        same X-Request-Id cannot use, or a job marked failed with the reason:

        1. the fast answer: its failure creates no job;
        2. the job, ``pending``, not ``queued``. A store error is a 503 that leaves no job or,
           when a timed-out write landed after all, a pending one no event was sent for;
        3. the input blob (large inputs), then 4. the event. A failure marks the job failed
           ("not queued"; 503: send a new id); when that fails too the job stays pending and
           not queued (503: retry with the same id);
        5. ``queued``, best effort: the event is out, so the answer is 200 even if this write
           fails; a retry of a job left unmarked sends its event again, which changes nothing
           (a job ends once).

        A second accept of an id with the same input takes a pending job no event was sent for
        over (steps 3-5); one that was queued or done answers its fast label again."""
        s = self.settings
        payload = {"image_data": base64.b64encode(raw).decode()}
        answer = self.client.call(
            "POST", s.fast_url + "/predict/label", rid, seconds=s.backend_timeout,
            incoming=request.headers, json=payload,
        )  # fmt: skip
        label = logic.fast_label(answer.status, logic.parse_json(answer.body))
        digest = logic.digest(raw)
        job = logic.new_job(rid, s.fast_model, label, time.time(), s.job_deadline_seconds, digest)
        if not self.store.create(job):
            job = logic.resumed(self.store.get(rid), rid, digest)
        if job.status == "pending" and not job.queued:
            self._queue(rid, raw)
        fast = {s.fast_model: str(job.fast["prediction"])}
        self.log.entry(request).output = fast  # the proxy's hop in the log: the fast answer
        return json_response({"job_id": rid, **fast}, rid)

    def _queue(self, rid: str, raw: bytes) -> None:
        """Steps 3-5 of ``_accept``: blob, event, ``queued``."""
        s = self.settings
        event, blob = logic.request_event(rid, raw, s.inline_max_bytes, f"/{s.k_service}")
        try:
            if blob is not None:
                self.store.put_blob(rid, blob)
            self.events.publish(event)
        except ServiceUnavailable as e:
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            try:
                self.store.finish(rid, "failed", str(event["id"]), reason=f"not queued: {e.detail}")
            except StoreUnavailable:
                detail = f"{e.detail}; job {rid} is not queued: retry with the same X-Request-Id"
                raise ServiceUnavailable(detail, headers=retry) from e
            detail = f"{e.detail}; job {rid} failed, not queued: send a new X-Request-Id"
            raise ServiceUnavailable(detail, headers=e.headers or retry) from e
        try:
            self.store.mark_queued(rid)
        except StoreUnavailable as e:  # the event is out: the worker will end the job
            logger.warning("job %s queued but not marked: %s", rid, e.detail, extra={"job_id": rid})

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
