"""Entry point of the predictor: HTTP adapters only (routing, parsing, serialising).

    functions-framework --source functions/predict/main.py --target predict
with MODEL_NAME set (see README). Endpoints: the seeds' (/health, /metadata, /label,
/predict, /predict/label, /predict/test, /predict/test/label), KServe V1 and V2, /metrics.
"""

from __future__ import annotations

import functools
from typing import Any

from flask import Request, Response
from pydantic import BaseModel

from functions.core import metrics
from functions.core.cards import load_card
from functions.core.codecs import Label
from functions.core.entry import entry_points, lazy_service
from functions.core.errors import ModelLoadError
from functions.core.http import HttpApp, Route, json_response, parse_model, read_body
from functions.core.loading import ModelSlot
from functions.core.openapi import Operation
from functions.core.recording import Observer
from functions.core.settings import SettingsError
from functions.predict import logged, logic, oip
from functions.predict.schemas import LabelPrediction, Prediction
from functions.predict.settings import PredictSettings

LOGGED_ENDPOINTS = {
    "predict", "predict_label", "predict_test", "predict_test_label", "v1_predict", "v2_infer",
}  # fmt: skip


class PredictService:
    """One per process: settings, the model slot, and the handlers its routes name."""

    def __init__(self, settings: PredictSettings) -> None:
        self.settings = settings
        try:  # a card that does not exist is a bad setting: stop before serving anything
            self.card = load_card(settings.model_cards, settings.model_name)
        except ModelLoadError as e:
            raise SettingsError(f"MODEL_NAME={settings.model_name!r}: {e.detail}") from e
        self.slot = ModelSlot(settings.model_name, functools.partial(logic.load, settings))
        # Which model answered, on every response: routes that pick a model say so.
        model_headers = {"X-Model": self.card.name, "X-Model-Version": self.card.version}
        start = logged.assigned if settings.route else None
        self.log = Observer(settings, self.card.name, self.card.version, LOGGED_ENDPOINTS, start)
        self.app = HttpApp(
            f"predict: {self.card.name}",
            self._routes(),
            observe=self.log,
            headers=model_headers,
            strict_slashes=False,
        )

    def _routes(self) -> list[Route]:
        # The request schema is the served card's (tabular rows of its feature count, or an
        # image): known once the model is loaded.
        body = lambda: self.slot.get().codec.request_model  # noqa: E731
        v2 = "/v2/models/<name>"
        return [
            Route("/health", "GET", self.health, Operation("Health (503 while the model loads)")),
            Route("/metadata", "GET", self.metadata, Operation(
                "Model metadata in the seeds' shape")),
            Route("/label", "GET", self.label, Operation("Label names in output order")),
            Route("/predict", "POST", self.predict, Operation(
                "Predict", request=body, response=Prediction)),
            Route("/predict/label", "POST", self.predict_label, Operation(
                "Predict the top label", request=body, response=LabelPrediction)),
            Route("/predict/test", "GET", self.predict_test, Operation(
                "Predict the card's sample", response=Prediction)),
            Route("/predict/test/label", "GET", self.predict_test_label, Operation(
                "Top label of the card's sample", response=LabelPrediction)),
            Route("/metrics", "GET", self.metrics, Operation(
                "Prometheus metrics", response_type="text/plain")),
            Route("/v1/models/<name>", "GET", self.v1_model, Operation(
                "KServe V1 model status")),
            Route("/v1/models/<name>:predict", "POST", self.v1_predict, Operation(
                "KServe V1 predict", request=oip.V1PredictRequest)),
            Route("/v2", "GET", self.v2_server, Operation(
                "Open Inference Protocol server metadata")),
            Route("/v2/health/live", "GET", self.v2_live, Operation(
                "Open Inference Protocol liveness")),
            Route("/v2/health/ready", "GET", self.v2_ready, Operation(
                "Open Inference Protocol readiness")),
            *(
                route
                for prefix in (v2, v2 + "/versions/<version>")
                for route in (
                    Route(prefix, "GET", self.v2_model, Operation(
                        "Open Inference Protocol model metadata")),
                    Route(prefix + "/ready", "GET", self.v2_model_ready, Operation(
                        "Open Inference Protocol model readiness")),
                    Route(prefix + "/infer", "POST", self.v2_infer, Operation(
                        "Open Inference Protocol inference", request=oip.V2InferRequest)),
                )
            ),
        ]  # fmt: skip

    def _body(self, request: Request, *, untyped_is_json: bool = False) -> bytes:
        return read_body(
            request,
            self.settings.max_body_bytes,
            untyped_is_json=untyped_is_json,
            received=self.log.entry(request).received if self.log.recording else None,
        )

    def _protocol_body(self, request: Request) -> bytes:
        return self._body(request, untyped_is_json=True)

    def _sample(self, request: Request) -> logic.ServedModel:
        """The served model, for an endpoint that predicts the card's sample (logged so)."""
        self.log.entry(request).input = logged.SAMPLE
        return self.slot.get()

    def _answer(self, request: Request, rid: str, body: BaseModel, label: Label) -> Response:
        return self._json(request, rid, body.model_dump(mode="json", exclude_none=True), label)

    def _json(
        self, request: Request, rid: str, body: dict[str, Any], label: Label | None = None
    ) -> Response:
        if self.log.recording:  # else nothing reads it: the hot path skips it
            logged.answered(self.log.entry(request), body, label)
        return json_response(body, rid)

    # -- the seeds' endpoints ------------------------------------------------------------

    def warm(self) -> None:
        """Load and warm the model now (production workers call this before taking traffic)."""
        self.slot.load()

    def health(self, request: Request, rid: str) -> Response:
        self.slot.get()
        return json_response({"health": "ok"}, rid)

    def metadata(self, request: Request, rid: str) -> Response:
        return json_response(self.slot.get().metadata(), rid)

    def label(self, request: Request, rid: str) -> Response:
        return json_response(list(self.slot.get().labels), rid)

    def predict(self, request: Request, rid: str) -> Response:
        served = self.slot.get()
        x = served.codec.decode(self._body(request))
        return self._answer(request, rid, *served.predict(x, rid))

    def predict_label(self, request: Request, rid: str) -> Response:
        served = self.slot.get()
        x = served.codec.decode(self._body(request))
        return self._answer(request, rid, *served.label(x, rid))

    def predict_test(self, request: Request, rid: str) -> Response:
        served = self._sample(request)
        return self._answer(request, rid, *served.predict(served.codec.sample, rid))

    def predict_test_label(self, request: Request, rid: str) -> Response:
        served = self._sample(request)
        return self._answer(request, rid, *served.label(served.codec.sample, rid))

    def metrics(self, request: Request, rid: str) -> Response:
        body, content_type = metrics.exposition(self.settings.prometheus_multiproc_dir)
        return Response(body, content_type=content_type)

    # -- KServe V1 and Open Inference Protocol V2 ----------------------------------------

    def v1_model(self, request: Request, rid: str) -> Response:
        name = self._model_name(request)
        return json_response({"name": name, "ready": self.slot.ready}, rid)

    def v1_predict(self, request: Request, rid: str) -> Response:
        served = self._served(request)
        body = parse_model(oip.V1PredictRequest, self._protocol_body(request))
        return self._json(request, rid, oip.v1_predict(served, body))

    def v2_server(self, request: Request, rid: str) -> Response:
        return json_response(oip.SERVER, rid)

    def v2_live(self, request: Request, rid: str) -> Response:
        return json_response({"live": True}, rid)

    def v2_ready(self, request: Request, rid: str) -> Response:
        self.slot.start()  # under a dev server, the first probe starts loading in the background
        return json_response({"ready": self.slot.ready}, rid, 200 if self.slot.ready else 503)

    def v2_model(self, request: Request, rid: str) -> Response:
        return json_response(oip.model_metadata(self._served(request)), rid)

    def v2_model_ready(self, request: Request, rid: str) -> Response:
        self._served(request)
        return json_response({"name": self._model_name(request), "ready": True}, rid)

    def v2_infer(self, request: Request, rid: str) -> Response:
        served = self._served(request)
        body = parse_model(oip.V2InferRequest, self._protocol_body(request))
        return self._json(request, rid, oip.infer(served, body, rid))

    def _model_name(self, request: Request) -> str:
        return str((request.view_args or {})["name"])

    def _served(self, request: Request) -> logic.ServedModel:
        served = self.slot.get()
        args = request.view_args or {}
        oip.check_name(served, str(args["name"]), self.settings.k_service, args.get("version"))
        return served


service = lazy_service(
    PredictService, PredictSettings, "predict", lambda s: {"model": s.model_name}
)
predict, warm = entry_points("predict", service)
