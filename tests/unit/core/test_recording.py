"""The prediction log record an Observer writes: one CloudEvent line per answered prediction,
from the envelope and the LogEntry the handler filled, with ids unique per source even
across a fork."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import orjson
from flask import Request, Response
from werkzeug.test import EnvironBuilder

from functions.core.errors import ValidationFailed
from functions.core.event_data import PredictionLogData
from functions.core.events import PREDICTION_LOGGED
from functions.core.http import HttpApp, Route, json_response, read_body
from functions.core.recording import INLINE_INPUT_BYTES, LogEntry, Observer
from functions.core.settings import EventSettings

ROWS = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})


def settings(tmp_path: Path, **given: object) -> EventSettings:
    return EventSettings(
        k_service="iris",
        k_sink="http://127.0.0.1:9/",
        outbox_dir=tmp_path,
        outbox_sender="process",
        **given,  # type: ignore[arg-type]
    )


def observer(tmp_path: Path) -> Observer:
    return Observer(settings(tmp_path), "iris-svc", "1", {"predict"})


def spooled(tmp_path: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for spool in sorted((tmp_path / "iris").glob("spool-*.jsonl"))
        for line in spool.read_bytes().splitlines()
    ]


def posted(raw: bytes = ROWS) -> Request:
    return Request(EnvironBuilder(path="/predict", method="POST", data=raw).get_environ())


def answer(body: dict[str, object], rid: str) -> Response:
    return Response(orjson.dumps({"job_id": rid, **body}), mimetype="application/json")


def test_a_prediction_becomes_one_valid_event(tmp_path: Path) -> None:
    observe = observer(tmp_path)
    request, response = posted(), answer({"prediction": [[0.9, 0.05, 0.05]]}, "job-1")
    entry = observe.entry(request)
    entry.received(ROWS)
    entry.output, entry.label = {"prediction": [[0.9, 0.05, 0.05]]}, ["setosa"]
    observe(request, "job-1", "predict", response, 0.0012, None)
    observe(request, "job-1", "health", response, 0.0001, None)  # not a recorded endpoint
    [event] = spooled(tmp_path)
    assert (event["type"], event["source"], event["jobid"]) == (
        PREDICTION_LOGGED,
        "/functions/iris",
        "job-1",
    )
    data = PredictionLogData.model_validate(event["data"])
    assert (data.label, data.latency_ms, data.input) == (
        ["setosa"],
        1.2,
        {"data": [[5.1, 3.5, 1.4, 0.2]]},
    )
    assert (data.output, data.variant, data.error) == (entry.output, "local", None)


def test_event_ids_are_unique_and_a_forked_copy_makes_its_own(tmp_path: Path) -> None:
    recorder = observer(tmp_path).recorder
    assert recorder is not None
    entry = LogEntry(input=ROWS, output={"prediction": [[0.9, 0.05, 0.05]]})
    for _ in range(3):
        recorder.record("job-2", "predict", 200, 0.001, entry)
    child = os.fork()
    if child == 0:  # the child records once and exits at once, pytest untouched
        recorder.record("job-2", "predict", 200, 0.001, entry)
        os._exit(0)
    os.waitpid(child, 0)
    recorder.record("job-2", "predict", 200, 0.001, entry)  # the parent's 4th
    ids = [event["id"] for event in spooled(tmp_path)]
    assert len(ids) == 5
    assert len(set(ids)) == 5


def test_event_ids_are_random_uuids_that_tell_nothing_of_the_next(tmp_path: Path) -> None:
    """They were a per-process prefix and a counter: the next ids, read off /logs, could be
    posted first, and the sink then dropped the real records as redeliveries."""
    recorder = observer(tmp_path).recorder
    assert recorder is not None
    for _ in range(50):
        recorder.record("job-2", "predict", 200, 0.001, LogEntry())
    ids = [event["id"] for event in spooled(tmp_path)]
    parsed = [uuid.UUID(i) for i in ids]
    assert all(
        str(u) == i and u.version == 4 and u.variant == uuid.RFC_4122
        for u, i in zip(parsed, ids, strict=True)
    )
    assert len({i[:8] for i in ids}) > 40  # no shared prefix (a counter's ids share one)


def test_a_failed_request_logs_its_input_and_error_and_no_answer(tmp_path: Path) -> None:
    recorder = observer(tmp_path).recorder
    assert recorder is not None
    entry = LogEntry(input=ROWS, output={"prediction": 1}, label="setosa", is_outlier=False)
    recorder.record("job-3", "predict", 422, 0.001, entry, "1 validation error(s)")
    [event] = spooled(tmp_path)
    data = event["data"]
    assert (data["status"], data["error"], data["input"]) == (
        422,
        "1 validation error(s)",
        {"data": [[5.1, 3.5, 1.4, 0.2]]},
    )
    assert not {"output", "label", "is_outlier", "outlier_score"} & set(data)


def test_inputs_are_inline_json_when_small_else_by_reference(tmp_path: Path) -> None:
    recorder = observer(tmp_path).recorder
    assert recorder is not None
    large = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]] * 1000})
    assert len(large) > INLINE_INPUT_BYTES
    for given in (large, b"{'data': 1}", b"  ", b"", "sample", None):
        recorder.record("job-4", "predict", 200, 0.001, LogEntry(input=given))
    logged = [event["data"].get("input") for event in spooled(tmp_path)]

    def reference(raw: bytes) -> dict[str, Any]:
        return {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}

    assert logged == [
        reference(large),
        reference(b"{'data': 1}"),  # not JSON
        reference(b"  "),
        None,
        "sample",
        None,
    ]


def test_the_entry_is_one_per_request_started_by_the_function(tmp_path: Path) -> None:
    started: list[Request] = []

    def start(request: Request) -> LogEntry:
        started.append(request)
        return LogEntry(assignment="forced")

    observe = Observer(settings(tmp_path), "iris-svc", "1", {"predict"}, start)
    first, second = posted(), posted()
    assert observe.entry(first) is observe.entry(first)
    assert observe.entry(second) is not observe.entry(first)
    assert started == [first, second]
    assert observe.entry(first).assignment == "forced"


def test_without_a_sink_nothing_is_recorded(tmp_path: Path) -> None:
    observe = Observer(
        EventSettings(k_service="iris", outbox_dir=tmp_path), "iris-svc", "1", {"predict"}
    )
    request = posted()
    observe.entry(request).received(ROWS)
    observe(request, "job-5", "predict", answer({}, "job-5"), 0.001, None)
    assert observe.recorder is None
    assert not (tmp_path / "iris").exists()


def test_through_http_app_a_refused_body_is_logged_with_the_problem(tmp_path: Path) -> None:
    """The app hands the observer the problem it answered; the body read before it went wrong
    is the input, even a blank one that read_body refuses."""
    observe = observer(tmp_path)

    def predict(request: Request, rid: str) -> Response:
        raw = read_body(request, 1024, received=observe.entry(request).received)
        if b"bad" in raw:
            raise ValidationFailed("bad rows")
        observe.entry(request).output = {"prediction": [1.0]}
        return json_response({"prediction": [1.0]}, rid)

    app = HttpApp("test", [Route("/predict", "POST", predict)], observe=observe)
    for rid, body in (("ok", ROWS), ("bad", b'{"bad": 1}'), ("blank", b"  ")):
        environ = EnvironBuilder(
            path="/predict",
            method="POST",
            data=body,
            content_type="application/json",
            headers=[("X-Request-Id", rid)],
        ).get_environ()
        app(Request(environ))
    ok, bad, blank = (event["data"] for event in spooled(tmp_path))
    assert (ok["status"], ok["input"], ok["output"]) == (
        200,
        orjson.loads(ROWS),
        {"prediction": [1.0]},
    )
    assert (bad["status"], bad["input"], bad["error"]) == (422, {"bad": 1}, "bad rows")
    assert "output" not in bad
    assert (blank["status"], blank["input"]["bytes"]) == (400, 2)
    assert "the request body is empty" in blank["error"]
