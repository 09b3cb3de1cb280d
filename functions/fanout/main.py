"""Entry point of the fan-out proxy: HTTP adapters only.

    functions-framework --source functions/fanout/main.py --target fanout
with BACKENDS set (``name=URL,...``). Every backend is called at once; see docs/fanout.md
for the endpoints and the shape of partial answers (``errors``, ``X-Answered``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Request, Response

from functions.core.client import Client, trace_context
from functions.core.entry import entry_points, lazy_service
from functions.core.http import HttpApp, Route, json_response, parse_model, read_body
from functions.core.openapi import Operation
from functions.core.recording import Observer
from functions.fanout import logic
from functions.fanout.backends import Backends
from functions.fanout.schemas import FannedResponse, LabelResponse, rows_request
from functions.fanout.settings import FanoutSettings


class FanoutService:
    """One per process: the backends, a thread pool and keep-alive connections to them."""

    def __init__(self, settings: FanoutSettings) -> None:
        self.settings = settings
        self.connections = Client(settings.max_connections, settings.cluster_local_gateway)
        self.threads = ThreadPoolExecutor(settings.max_connections, thread_name_prefix="fanout")
        self.backends = Backends(
            settings.backends, settings.backend_timeout, self.connections, self.threads
        )
        self.request_model = rows_request(settings.max_batch_rows)
        # The proxy's own hop in the prediction log (the backends log theirs), same job_id.
        logged = {"predict", "predict_label", "predict_get_test", "predict_post_test"}
        self.log = Observer(settings, "fanout", settings.k_revision, logged)
        rows = self.request_model
        routes = [
            Route("/health", "GET", self.health, Operation("Health of the proxy")),
            Route("/health/all", "GET", self.health_all, Operation("Health of every backend")),
            Route("/metadata", "GET", self.metadata, Operation(
                "Metadata, with each backend's prediction sample")),
            Route("/predict", "POST", self.predict, Operation(
                "Every backend's prediction", request=rows, response=FannedResponse)),
            Route("/predict/label", "POST", self.predict_label, Operation(
                "The best label", request=rows, response=LabelResponse)),
            Route("/predict/get/test", "GET", self.predict_get_test, Operation(
                "Every backend's prediction of its sample")),
            Route("/predict/post/test", "GET", self.predict_post_test, Operation(
                "Every backend's prediction of its sample, by POST")),
        ]  # fmt: skip
        self.app = HttpApp("fanout", routes, observe=self.log, strict_slashes=False)

    def close(self) -> None:
        """Finish calls in flight and close the kept connections (tests; a worker just exits)."""
        self.threads.shutdown(wait=True)
        self.connections.close()

    def health(self, request: Request, rid: str) -> Response:
        return json_response({"health": "ok"}, rid)

    def health_all(self, request: Request, rid: str) -> Response:
        fanned = self.backends.each("GET", "/health", rid, _trace(request))
        return json_response(logic.merged(fanned, "health"), rid, headers=fanned.headers())

    def metadata(self, request: Request, rid: str) -> Response:
        fanned = self.backends.each("GET", "/metadata", rid, _trace(request))
        return json_response(logic.metadata(fanned), rid, headers=fanned.headers())

    def predict(self, request: Request, rid: str) -> Response:
        fanned = self.backends.each("POST", "/predict", rid, _trace(request), self._rows(request))
        return self._answer(request, rid, logic.merged(fanned, "prediction"), fanned)

    def predict_label(self, request: Request, rid: str) -> Response:
        fanned = self.backends.each("POST", "/predict", rid, _trace(request), self._rows(request))
        fanned = logic.with_probabilities(fanned)
        body = logic.best_label(fanned)
        self.log.entry(request).label = _labels(body["prediction"])
        return self._answer(request, rid, body, fanned)

    def predict_get_test(self, request: Request, rid: str) -> Response:
        self.log.entry(request).input = "sample"
        fanned = self.backends.each("GET", "/predict/test", rid, _trace(request))
        return self._answer(request, rid, logic.merged(fanned, "prediction"), fanned)

    def predict_post_test(self, request: Request, rid: str) -> Response:
        self.log.entry(request).input = "sample"
        fanned = self.backends.each_with_sample(rid, _trace(request))
        return self._answer(request, rid, logic.merged(fanned, "prediction"), fanned)

    def _rows(self, request: Request) -> object:
        received = self.log.entry(request).received
        raw = read_body(request, self.settings.max_body_bytes, received=received)
        return parse_model(self.request_model, raw).model_dump()

    def _answer(
        self, request: Request, rid: str, body: dict[str, Any], fanned: logic.Fanned
    ) -> Response:
        self.log.entry(request).output = body  # the proxy's hop in the log: what it answered
        return json_response(body, rid, headers=fanned.headers())


def _labels(prediction: Any) -> str | list[str]:
    """The label(s) a ``/predict/label`` answer names: one, or one per row."""
    if isinstance(prediction, list):
        return [str(row["label"]) for row in prediction]
    return str(prediction["label"])


def _trace(request: Request) -> dict[str, str]:
    """The incoming W3C trace context, taken once here and passed on unchanged to every backend."""
    return trace_context(request.headers)


service = lazy_service(FanoutService, FanoutSettings, "fanout")
fanout, warm = entry_points("fanout", service)
