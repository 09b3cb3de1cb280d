"""Entry points of the prediction log's three Services, over one store: HTTP adapters only.

``prediction_log_ingest`` (the cluster-local ``prediction-log-ingest``) takes ``POST /``,
the Trigger subscriber for ``prediction.logged`` events (an empty 202, or a 4xx the broker
will not retry). ``prediction_log_dead_letter`` (the cluster-local
``prediction-log-dead-letter``) takes ``POST /``, the Trigger's dead-letter sink: it spools
what the ingest did not take and replays it into the store (``dead_letters``).
Both event routes are declared ``auth="event"``: with ``EVENT_AUTH=oidc`` only a delivery
whose token the broker was issued for that Service gets in. ``prediction_log`` (the public
``prediction-log``) is the query API, every path behind the
``API_TOKEN`` bearer token: ``GET /logs`` queries the store, ``POST /feedback`` records a
job's true label, ``GET /ab-report?route=`` compares a route's variants. All answer ``GET
/health``, and the two event Services ``GET /metrics``. Split so that no one outside the
cluster can write the log, nor anyone without the token read it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Request, Response

from functions.core import metrics, transport
from functions.core.entry import entry_points, lazy_service
from functions.core.errors import NotFound
from functions.core.event_auth import verifier_for
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
from functions.prediction_log.dead_letters import DeadLetters
from functions.prediction_log.ingest import store_event
from functions.prediction_log.schemas import FeedbackRequest, LogsQuery, LogsResponse, ReportQuery
from functions.prediction_log.settings import PredictionLogSettings
from functions.prediction_log.store import Query, open_log_store


class PredictionLogService:
    def __init__(self, settings: PredictionLogSettings) -> None:
        self.settings = settings
        self.store = open_log_store(settings.log_store_url.get_secret_value())
        self._closing: list[Callable[[], None]] = []
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
        self._observe, self._health = observe, health
        verifier = verifier_for(settings)
        self._verify = verifier.verify if verifier is not None else None
        ingest = [
            Route("/", "POST", self.on_prediction_logged, Operation(
                "Store a prediction.logged CloudEvent (Trigger subscriber)",
                request=PredictionLogData), auth="event"),
            health,
            self._metrics_route(),
        ]  # fmt: skip
        self.ingest = Surface(
            HttpApp("prediction-log-ingest", ingest, observe=observe, verify_event=self._verify)
        )

    @functools.cached_property
    def dead_letters(self) -> Surface:
        """The dead-letter Service's surface, built (and its replayer started) on first use:
        only the process serving that target replays."""
        spool = DeadLetters(
            self.settings.dead_letter_dir,
            self.store,
            self.settings.max_body_bytes,
            replay=self.settings.dead_letter_replay,
        )
        self._closing.append(spool.close)
        routes = [
            Route("/", "POST", spool.receive, Operation(
                "Spool a dead-lettered prediction.logged CloudEvent (the Trigger's "
                "dead-letter sink)"), auth="event"),
            self._health,
            self._metrics_route(),
        ]  # fmt: skip
        app = HttpApp(
            "prediction-log-dead-letter", routes, observe=self._observe, verify_event=self._verify
        )
        return Surface(app)

    def close(self) -> None:
        """Stop the replayer and close the log store (tests; a worker just exits)."""
        for close in self._closing:
            close()
        self.store.close()

    def _metrics_route(self) -> Route:
        return Route("/metrics", "GET", self.metrics, Operation(
            "Prometheus metrics", response_type="text/plain"))  # fmt: skip

    def on_prediction_logged(self, request: Request, rid: str) -> Response:
        body = read_limited(request, self.settings.max_body_bytes)
        store_event(self.store, transport.receive(dict(request.headers), body))
        return Response(status=202)

    def metrics(self, request: Request, rid: str) -> Response:
        body, content_type = metrics.exposition(self.settings.prometheus_multiproc_dir)
        return Response(body, content_type=content_type)

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


class Surface:
    """An event Service's surface: the same service and store, its own routes. (No
    dataclass: a main.py is also loaded as a module that is in no ``sys.modules``.)"""

    def __init__(self, app: HttpApp) -> None:
        self.app = app


service = lazy_service(PredictionLogService, PredictionLogSettings, "prediction_log")
prediction_log, warm = entry_points("prediction_log", service)
# warm() builds the one service (its store) under either target.
prediction_log_ingest, _ = entry_points("prediction_log_ingest", lambda: service().ingest)
prediction_log_dead_letter, _ = entry_points(
    "prediction_log_dead_letter", lambda: service().dead_letters
)
