"""Entry points of the prediction log's two Services, over one store: HTTP adapters only.

``prediction_log_ingest`` (the cluster-local ``prediction-log-ingest``) takes ``POST /``,
the Trigger subscriber for ``prediction.logged`` events (an empty 202, or a 4xx the broker
will not retry). ``prediction_log`` (the public ``prediction-log``) is the query API, every
path behind the ``API_TOKEN`` bearer token: ``GET /logs`` queries the store, ``POST
/feedback`` records a job's true label, ``GET /ab-report?route=`` compares a route's
variants. Both answer ``GET /health``. Split so that no one outside the cluster can write
the log, nor anyone without the token read it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Request, Response
from pydantic import ValidationError

from functions.core import events, transport
from functions.core.entry import entry_points, lazy_service
from functions.core.errors import NotFound, ValidationFailed
from functions.core.event_data import PredictionLogData
from functions.core.http import (
    HttpApp,
    Route,
    json_response,
    parse_model,
    read_body,
    read_limited,
    validate_model,
)
from functions.core.openapi import Operation
from functions.core.recording import Observer
from functions.prediction_log import ab_report
from functions.prediction_log.schemas import FeedbackRequest, LogsQuery, LogsResponse, ReportQuery
from functions.prediction_log.settings import PredictionLogSettings
from functions.prediction_log.store import Query, open_log_store

logger = logging.getLogger("predictions")


class PredictionLogService:
    def __init__(self, settings: PredictionLogSettings) -> None:
        self.settings = settings
        self.store = open_log_store(settings.log_store_url.get_secret_value())
        observe = Observer(settings, "prediction-log", "1", set())
        health = Route("/health", "GET", self.health, Operation("Health"))
        queries = [
            Route("/logs", "GET", self.logs, Operation(
                "Query the log", query=LogsQuery, response=LogsResponse), auth="token"),
            Route("/feedback", "POST", self.feedback, Operation(
                "Record a job's true label", request=FeedbackRequest), auth="token"),
            Route("/ab-report", "GET", self.ab_report, Operation(
                "A/B figures and verdict of a route", query=ReportQuery), auth="token"),
            health,
        ]  # fmt: skip
        self.app = HttpApp("prediction-log", queries, observe=observe, token=settings.api_token)
        ingest = [
            Route("/", "POST", self.on_prediction_logged, Operation(
                "Store a prediction.logged CloudEvent (Trigger subscriber)",
                request=PredictionLogData)),
            health,
        ]  # fmt: skip
        self.ingest = Ingest(HttpApp("prediction-log-ingest", ingest, observe=observe))

    def close(self) -> None:
        """Close the log store (tests; a worker just exits)."""
        self.store.close()

    def on_prediction_logged(self, request: Request, rid: str) -> Response:
        body = read_limited(request, self.settings.max_body_bytes)
        event = transport.receive(dict(request.headers), body)
        if event["type"] != events.PREDICTION_LOGGED:
            raise ValidationFailed(
                f"this subscriber takes {events.PREDICTION_LOGGED}, not {event['type']}"
            )
        try:
            record = PredictionLogData.model_validate(event.data)
        except ValidationError as e:
            raise ValidationFailed(
                f"event {event['id']}: data is not a prediction log: {e.error_count()} error(s)"
            ) from e
        added = self.store.add(
            str(event["source"]),
            str(event["id"]),
            str(event["time"]),
            record.model_dump(mode="json", exclude_none=True),
        )
        if added:  # the seed's `kubectl logs` line, here rather than on every predictor's path
            logger.info("prediction logged", extra=_log_fields(record))
        return Response(status=202)

    def logs(self, request: Request, rid: str) -> Response:
        params = validate_model(LogsQuery, request.args.to_dict())
        query = Query(
            **params.model_dump(exclude={"limit"}),
            limit=min(params.limit, self.settings.query_limit),
        )
        return json_response(LogsResponse(job_id=rid, records=self.store.query(query)), rid)

    def feedback(self, request: Request, rid: str) -> Response:
        given = parse_model(FeedbackRequest, read_body(request, self.settings.max_body_bytes))
        if not self.store.has_job(given.job_id):
            raise NotFound(f"no prediction with job_id {given.job_id!r} in the log")
        replaced = self.store.set_feedback(given.job_id, given.label, datetime.now(UTC).isoformat())
        return json_response(
            {"job_id": given.job_id, "label": given.label, "replaced": replaced}, rid
        )

    def ab_report(self, request: Request, rid: str) -> Response:
        route = validate_model(ReportQuery, request.args.to_dict()).route
        records = self.store.query(Query(route=route, limit=self.settings.report_limit))
        if not records:
            raise NotFound(f"no prediction logged for route {route!r}")
        truth = self.store.feedback(sorted({r["job_id"] for r in records}))
        return json_response(ab_report.report(route, records, truth), rid)

    def health(self, request: Request, rid: str) -> Response:
        return json_response({"health": "ok"}, rid)


class Ingest:
    """The ingest Service's surface: the same service and store, its own routes. (No
    dataclass: a main.py is also loaded as a module that is in no ``sys.modules``.)"""

    def __init__(self, app: HttpApp) -> None:
        self.app = app


def _log_fields(record: PredictionLogData) -> dict[str, object]:
    fields = ("job_id", "service", "model", "variant", "endpoint", "status", "label", "is_outlier")
    return {name: getattr(record, name) for name in fields} | {"ms": record.latency_ms}


service = lazy_service(PredictionLogService, PredictionLogSettings, "prediction_log")
prediction_log, warm = entry_points("prediction_log", service)
# warm() builds the one service (its store) under either target.
prediction_log_ingest, _ = entry_points("prediction_log_ingest", lambda: service().ingest)
