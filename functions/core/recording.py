"""Prediction log records: every prediction a Service answers — a predictor, or a proxy for
its own hop — as a ``prediction.logged`` CloudEvent written to the outbox (off the critical
path; see ``core.outbox``). Failed requests are recorded too, with their error. A request
through a proxy makes one record per hop, all linked by the job_id the proxy forwards.

Core writes the envelope (job_id, service, model, version, variant, endpoint, status,
latency, error, route); what the request carried and what it answered is the function's to
say. Its handlers fill the request's ``LogEntry`` (``Observer.entry``) as they go, so a
request that fails half-way is still logged with the input it had.

Recording is on every prediction's path, so it does the least it can (~10 us): one dict,
one orjson line, one ``write(2)``. The human-readable line per prediction is the sink's
(``kubectl logs`` of prediction-log, as in the seed); here it is DEBUG only, because a
``logging`` record costs more than the rest of the record put together.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from flask import Request, Response

from functions.core import metrics
from functions.core.errors import FunctionError
from functions.core.events import JOB_ID, PREDICTION_LOGGED
from functions.core.outbox import Sender, Writer
from functions.core.settings import EventSettings
from functions.core.transport import sink_for

logger = logging.getLogger("predictions")

INLINE_INPUT_BYTES = 16 * 1024  # larger inputs are recorded by reference (sha256 and size)
# How a request reached a variant of an A/B route (functions.predict.logged says).
Assignment = Literal["split", "forced", "sticky", "direct"]
_ENTRY = "mlf.log_entry"  # where a request keeps its LogEntry: its WSGI environ


@dataclass(slots=True)
class LogEntry:
    """What a function logs of one request beyond the envelope; what stays None is left out.
    A failed request logs its ``input`` and ``assignment`` only (and its error)."""

    input: Any = None  # bytes: the body as received, logged as its JSON or by reference
    output: Any = None
    label: str | list[str] | None = None
    is_outlier: bool | list[bool] | None = None
    outlier_score: float | list[float] | None = None
    assignment: Assignment | None = None

    def received(self, body: bytes) -> None:
        """Take ``body`` as the input (for ``core.http.read_body``'s ``received``)."""
        self.input = body


class Recorder:
    """Writes the records of model ``model`` at ``version`` to this Service's outbox."""

    def __init__(self, settings: EventSettings, model: str, version: str) -> None:
        self.settings, self.model, self.version = settings, model, version
        self.variant = settings.variant or settings.k_revision
        self.outbox = Writer(settings.outbox_path(), settings.outbox_max_bytes)
        self.source = f"/functions/{settings.k_service}"
        if settings.outbox_sender == "thread":  # no core.serve sender process: send from here
            Sender(settings.outbox_path(), sink_for(settings).send).start()

    def record(
        self,
        rid: str,
        endpoint: str,
        status: int,
        seconds: float,
        entry: LogEntry,
        error: str | None = None,
    ) -> None:
        failed = status >= 400
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
            "status": status,
            "latency_ms": latency_ms,
            "input": _input(entry.input),
            "output": None if failed else entry.output,
            "is_outlier": None if failed else entry.is_outlier,
            "outlier_score": None if failed else entry.outlier_score,
            "error": error if failed else None,
            "label": None if failed else entry.label,
            "route": self.settings.route,
            "assignment": entry.assignment,
        }
        self.outbox.emit(
            {
                "specversion": "1.0",
                "id": event_id(),
                "source": self.source,
                "type": PREDICTION_LOGGED,
                "time": datetime.now(UTC).isoformat(),
                JOB_ID: rid,
                "datacontenttype": "application/json",
                "data": {k: v for k, v in data.items() if v is not None},
            }
        )
        if logger.isEnabledFor(logging.DEBUG):
            extra = {"job_id": rid, "endpoint": endpoint, "status": status}
            logger.debug("prediction", extra=extra | {"ms": latency_ms})


def event_id() -> str:
    """A random (version 4) UUID: unguessable, so no one can claim the id of a record to come
    (the sink dedupes on source and id). From ``os.urandom`` (~0.7 us): a third of ``uuid4``."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}  # RFC 4122's 10xx bits


def _input(given: Any) -> Any:
    """A body as received: its JSON when small enough and valid, else a reference to it."""
    if not isinstance(given, bytes):
        return given
    if not given:
        return None
    if len(given) <= INLINE_INPUT_BYTES:
        try:
            return orjson.loads(given)
        except orjson.JSONDecodeError:
            pass
    return {"sha256": hashlib.sha256(given).hexdigest(), "bytes": len(given)}


class Observer:
    """What ``HttpApp`` calls after every request: the Prometheus metrics, and — when a
    SinkBinding gave the Service a K_SINK, or events go to Pub/Sub — the prediction log record
    of ``endpoints``, from the ``LogEntry`` its handler filled (``entry``). ``start`` makes a
    request's entry from the request, with what the function logs of every one of them."""

    def __init__(
        self,
        settings: EventSettings,
        model: str,
        version: str,
        endpoints: set[str],
        start: Callable[[Request], LogEntry] | None = None,
    ) -> None:
        self.model, self.version, self.endpoints = model, version, endpoints
        self.recorder = Recorder(settings, model, version) if settings.publishes else None
        self._start = start

    @property
    def recording(self) -> bool:
        """Whether records are written (a K_SINK or Pub/Sub): if not, an entry is scratch."""
        return self.recorder is not None

    def entry(self, request: Request) -> LogEntry:
        """The log entry of ``request``, for its handler to fill (made on first use)."""
        if self.recorder is None:
            return LogEntry()  # nothing is recorded: a scratch one
        entry: LogEntry | None = request.environ.get(_ENTRY)
        if entry is None:
            entry = self._start(request) if self._start is not None else LogEntry()
            request.environ[_ENTRY] = entry
        return entry

    def __call__(
        self,
        request: Request,
        rid: str,
        endpoint: str,
        response: Response,
        seconds: float,
        problem: FunctionError | None,
    ) -> None:
        status = response.status_code
        metrics.observe_request(self.model, self.version, endpoint, status, seconds)
        if self.recorder is not None and endpoint in self.endpoints:
            error = problem.detail if problem is not None else None
            self.recorder.record(rid, endpoint, status, seconds, self.entry(request), error)
