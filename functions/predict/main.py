"""Entry point of the predictor: HTTP adapters only (routing, parsing, serialising).

    functions-framework --source functions/predict/main.py --target predict
with MODEL_NAME set (see README). Endpoints: the seeds' (/health, /metadata, /label,
/predict, /predict/label, /predict/test, /predict/test/label), KServe V1 and V2, /metrics.
"""

from __future__ import annotations

import functools
from typing import Any

import functions_framework
from flask import Request, Response
from werkzeug.routing import Map, Rule

from functions.core import metrics
from functions.core.cards import ModelCard, load_card
from functions.core.entry import lazy_service
from functions.core.errors import ModelLoadError
from functions.core.http import HttpApp, json_response, parse_model, read_body
from functions.core.loading import ModelSlot
from functions.core.openapi import document
from functions.core.recording import observer
from functions.core.settings import SettingsError
from functions.predict import logic, oip
from functions.predict.openapi import operations
from functions.predict.schemas import ImageRequest
from functions.predict.settings import PredictSettings

_V2 = "/v2/models/<name>"
LOGGED_ENDPOINTS = {
    "predict", "predict_label", "predict_test", "predict_test_label", "v1_predict", "v2_infer",
}  # fmt: skip
ROUTES = Map(
    [
        Rule("/health", endpoint="health", methods=["GET"]),
        Rule("/metadata", endpoint="metadata", methods=["GET"]),
        Rule("/label", endpoint="label", methods=["GET"]),
        Rule("/predict", endpoint="predict", methods=["POST"]),
        Rule("/predict/label", endpoint="predict_label", methods=["POST"]),
        Rule("/predict/test", endpoint="predict_test", methods=["GET"]),
        Rule("/predict/test/label", endpoint="predict_test_label", methods=["GET"]),
        Rule("/metrics", endpoint="metrics", methods=["GET"]),
        Rule("/v1/models/<name>", endpoint="v1_model", methods=["GET"]),
        Rule("/v1/models/<name>:predict", endpoint="v1_predict", methods=["POST"]),
        Rule("/v2", endpoint="v2_server", methods=["GET"]),
        Rule("/v2/health/live", endpoint="v2_live", methods=["GET"]),
        Rule("/v2/health/ready", endpoint="v2_ready", methods=["GET"]),
        *(
            Rule(prefix + suffix, endpoint=endpoint, methods=[method])
            for prefix in (_V2, _V2 + "/versions/<version>")
            for suffix, endpoint, method in (
                ("", "v2_model", "GET"),
                ("/ready", "v2_model_ready", "GET"),
                ("/infer", "v2_infer", "POST"),
            )
        ),
    ],
    strict_slashes=False,
)


class PredictService:
    """One per process: settings, the model slot, and the handlers behind ``ROUTES``."""

    def __init__(self, settings: PredictSettings) -> None:
        self.settings = settings
        try:  # a card that does not exist is a bad setting: stop before serving anything
            self.card = load_card(settings.model_cards, settings.model_name)
        except ModelLoadError as e:
            raise SettingsError(f"MODEL_NAME={settings.model_name!r}: {e.detail}") from e
        self.slot = ModelSlot(settings.model_name, functools.partial(logic.load, settings))
        # Which model answered, on every response: routes that pick a model say so.
        model_headers = {"X-Model": self.card.name, "X-Model-Version": self.card.version}
        observe = observer(
            settings, self.card.name, self.card.version, LOGGED_ENDPOINTS, _labels(self.card)
        )
        self.app = HttpApp(ROUTES, self._handlers(), observe, model_headers, self._openapi)

    def _handlers(self) -> dict[str, Any]:
        return {rule.endpoint: getattr(self, rule.endpoint) for rule in ROUTES.iter_rules()}

    def _body(self, request: Request) -> bytes:
        return read_body(request, self.settings.max_body_bytes)

    def _protocol_body(self, request: Request) -> bytes:
        return read_body(request, self.settings.max_body_bytes, untyped_is_json=True)

    # -- the seeds' endpoints ------------------------------------------------------------

    def health(self, request: Request, rid: str) -> Response:
        self.slot.get()
        return json_response({"health": "ok"}, rid)

    def metadata(self, request: Request, rid: str) -> Response:
        return json_response(self.slot.get().metadata(), rid)

    def label(self, request: Request, rid: str) -> Response:
        return json_response(list(self.slot.get().model.labels), rid)

    def predict(self, request: Request, rid: str) -> Response:
        model = self.slot.get()
        if model.request_model is None:
            image = parse_model(ImageRequest, self._body(request))
            return json_response(
                model.predict_tensor(model.image_from_base64(image.image_data), rid), rid
            )
        rows = parse_model(model.request_model, self._body(request))
        return json_response(model.predict_rows(rows.data, rid), rid)  # type: ignore[attr-defined]

    def predict_label(self, request: Request, rid: str) -> Response:
        model = self.slot.get()
        if model.request_model is None:
            image = parse_model(ImageRequest, self._body(request))
            return json_response(
                model.label_tensor(model.image_from_base64(image.image_data), rid), rid
            )
        rows = parse_model(model.request_model, self._body(request))
        return json_response(model.label_rows(rows.data, rid), rid)  # type: ignore[attr-defined]

    def predict_test(self, request: Request, rid: str) -> Response:
        model = self.slot.get()
        if model.request_model is None:
            return json_response(model.predict_tensor(model.image_tensor(model.sample), rid), rid)
        return json_response(model.predict_rows(model.sample, rid), rid)

    def predict_test_label(self, request: Request, rid: str) -> Response:
        model = self.slot.get()
        if model.request_model is None:
            return json_response(model.label_tensor(model.image_tensor(model.sample), rid), rid)
        return json_response(model.label_rows(model.sample, rid), rid)

    def _openapi(self) -> dict[str, Any]:
        model = self.slot.get()  # the request schema is the loaded card's (feature count)
        return document(
            f"predict: {self.card.name}", ROUTES, operations(model.request_model or ImageRequest)
        )

    def metrics(self, request: Request, rid: str) -> Response:
        body, content_type = metrics.exposition(self.settings.prometheus_multiproc_dir)
        return Response(body, content_type=content_type, headers={"X-Request-Id": rid})

    # -- KServe V1 and Open Inference Protocol V2 ----------------------------------------

    def v1_model(self, request: Request, rid: str) -> Response:
        name = self._model_name(request)
        return json_response({"name": name, "ready": self.slot.ready}, rid)

    def v1_predict(self, request: Request, rid: str) -> Response:
        model = self._served(request)
        body = parse_model(oip.V1PredictRequest, self._protocol_body(request))
        return json_response(oip.v1_predict(model, body), rid)

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
        model = self._served(request)
        body = parse_model(oip.V2InferRequest, self._protocol_body(request))
        return json_response(oip.infer(model, body, rid), rid)

    def _model_name(self, request: Request) -> str:
        return str((request.view_args or {})["name"])

    def _served(self, request: Request) -> logic.PredictLogic:
        model = self.slot.get()
        args = request.view_args or {}
        oip.check_name(model, str(args["name"]), self.settings.k_service, args.get("version"))
        return model


def _labels(card: ModelCard) -> tuple[str, ...]:
    """Label names known from the card alone (tabular): the log names the argmax with them."""
    return card.labels.names if card.labels and card.labels.names else ()


service = lazy_service(
    PredictService, PredictSettings, "predict", lambda s: {"model": s.model_name}
)


@functions_framework.http
def predict(request: Request) -> Response:
    """Every path of the predictor; see ``ROUTES``."""
    return service().app(request)


def warm() -> None:
    """Load and warm the model now (production workers call this before taking traffic)."""
    service().slot.load()
