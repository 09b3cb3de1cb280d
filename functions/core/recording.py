"""Prediction log records: every prediction a Service answers — a predictor, or a proxy for
its own hop — as a ``prediction.logged`` CloudEvent written to the outbox (off the critical
path; see ``core.outbox``). Failed requests are recorded too, with their error. A request
through a proxy makes one record per hop, all linked by the job_id the proxy forwards.

Recording is on every prediction's path, so it does the least it can (~10 us): one dict,
one orjson line, one ``write(2)``. The human-readable line per prediction is the sink's
(``kubectl logs`` of prediction-log, as in the seed); here it is DEBUG only, because a
``logging`` record costs more than the rest of the record put together.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Request, Response

from functions.core import metrics
from functions.core.events import JOB_ID, PREDICTION_LOGGED
from functions.core.http import RAW_BODY
from functions.core.outbox import Sender, Writer
from functions.core.settings import EventSettings
from functions.core.transport import sink_for

logger = logging.getLogger("predictions")

ASSIGNMENT_HEADER = "X-AB-Assignment"  # set by the ab-test route's rules, never by clients
INLINE_INPUT_BYTES = 16 * 1024  # larger inputs are recorded by reference (sha256 and size)
_ANSWER_KEYS = ("job_id", "model", "version", "is_outlier", "outlier_score")


class Recorder:
    """Records the predictions ``endpoints`` answer, as model ``model`` at ``version``."""

    def __init__(
        self,
        settings: EventSettings,
        model: str,
        version: str,
        endpoints: set[str],
        labels: tuple[str, ...] = (),
    ) -> None:
        self.settings, self.model, self.version, self.endpoints = (
            settings,
            model,
            version,
            endpoints,
        )
        self.variant = settings.variant or settings.k_revision
        self.labels = labels
        self.outbox = Writer(settings.outbox_path(), settings.outbox_max_bytes)
        self.source = f"/functions/{settings.k_service}"
        # Event ids: unique per source (the sink dedupes on them) for far less than a uuid4.
        self._new_ids()
        os.register_at_fork(after_in_child=self._new_ids)  # a forked copy must not reuse them
        if settings.outbox_sender == "thread":  # no core.serve sender process: send from here
            Sender(settings.outbox_path(), sink_for(settings).send).start()

    def _new_ids(self) -> None:
        self._ids = itertools.count()
        self._id_prefix = f"{os.urandom(8).hex()}-"

    def record(
        self, request: Request, rid: str, endpoint: str, response: Response, seconds: float
    ) -> None:
        if endpoint not in self.endpoints:
            return
        answer = (
            orjson.loads(response.get_data())
            if response.is_json or response.status_code >= 400
            else {}
        )
        failed = response.status_code >= 400
        latency_ms = round(seconds * 1000, 3)
        # The fields of PredictionLogData (the sink validates them; building the model here
        # would cost every prediction ~10 us for nothing).
        data = {
            "job_id": rid,
            "service": self.settings.k_service,
            "model": self.model,
            "version": self.version,
            "variant": self.variant,
            "endpoint": endpoint,
            "status": response.status_code,
            "latency_ms": latency_ms,
            "input": _input(request),
            "output": None
            if failed
            else {k: v for k, v in answer.items() if k not in _ANSWER_KEYS},
            "is_outlier": answer.get("is_outlier"),
            "outlier_score": answer.get("outlier_score"),
            "error": answer.get("detail") if failed else None,
            "label": None if failed else _label(answer.get("prediction"), self.labels),
            "route": self.settings.route,
            "assignment": _assignment(request) if self.settings.route else None,
        }
        self.outbox.emit(
            {
                "specversion": "1.0",
                "id": f"{self._id_prefix}{next(self._ids)}",
                "source": self.source,
                "type": PREDICTION_LOGGED,
                "time": datetime.now(UTC).isoformat(),
                JOB_ID: rid,
                "datacontenttype": "application/json",
                "data": {k: v for k, v in data.items() if v is not None},
            }
        )
        if logger.isEnabledFor(logging.DEBUG):
            extra = {"job_id": rid, "endpoint": endpoint, "status": response.status_code}
            logger.debug("prediction", extra=extra | {"ms": latency_ms})


def _input(request: Request) -> Any:
    raw: bytes | None = request.environ.get(RAW_BODY)
    if not raw:
        return "sample" if request.method == "GET" else None
    if len(raw) > INLINE_INPUT_BYTES:
        return {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}


def _label(prediction: Any, labels: tuple[str, ...]) -> str | list[str] | None:
    """The top label of an answer: given (label endpoints, images) or the argmax of the
    probabilities (tabular ``/predict``); a list for N rows."""
    if isinstance(prediction, str):
        return prediction
    if isinstance(prediction, dict):
        return str(prediction.get("label"))
    if isinstance(prediction, list) and prediction:
        if isinstance(prediction[0], list | dict):
            return [str(_label(row, labels)) for row in prediction]
        best = max(range(len(prediction)), key=prediction.__getitem__)
        return labels[best] if best < len(labels) else str(best)
    return None


def _assignment(request: Request) -> str:
    """How an A/B request got here: the route's forcing rule or the sticky router say so."""
    given = request.headers.get(ASSIGNMENT_HEADER, "split").lower()
    return given if given in ("forced", "sticky") else "split"


Observe = Callable[[Request, str, str, Response, float], None]


def observer(
    settings: EventSettings,
    model: str,
    version: str,
    endpoints: set[str],
    labels: tuple[str, ...] = (),
) -> Observe:
    """What ``HttpApp`` calls after every request: the Prometheus metrics, and — when a
    SinkBinding gave the Service a K_SINK, or events go to Pub/Sub — the prediction log record
    of ``endpoints``."""
    recorder = Recorder(settings, model, version, endpoints, labels) if settings.publishes else None

    def observe(
        request: Request, rid: str, endpoint: str, response: Response, seconds: float
    ) -> None:
        metrics.observe_request(model, version, endpoint, response.status_code, seconds)
        if recorder is not None:
            recorder.record(request, rid, endpoint, response, seconds)

    return observe
