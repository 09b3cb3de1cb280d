"""The prediction log record a Recorder writes: one CloudEvent line per answered prediction,
with ids unique per source even across a fork."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from flask import Request, Response
from werkzeug.test import EnvironBuilder

from functions.core.event_data import PredictionLogData
from functions.core.events import PREDICTION_LOGGED
from functions.core.http import RAW_BODY
from functions.core.recording import Recorder
from functions.core.settings import EventSettings


def recorder(tmp_path: Path) -> Recorder:
    settings = EventSettings(
        k_service="iris", k_sink="http://127.0.0.1:9/", outbox_dir=tmp_path, outbox_sender="process"
    )
    return Recorder(settings, "iris-svc", "1", {"predict"}, ("setosa", "versicolor", "virginica"))


def spooled(tmp_path: Path) -> list[dict[str, object]]:
    return [
        orjson.loads(line)
        for spool in sorted((tmp_path / "iris").glob("spool-*.jsonl"))
        for line in spool.read_bytes().splitlines()
    ]


def answer(body: dict[str, object], rid: str) -> tuple[Request, Response]:
    raw = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})
    request = Request(EnvironBuilder(path="/predict", method="POST", data=raw).get_environ())
    request.environ[RAW_BODY] = raw
    return request, Response(orjson.dumps({"job_id": rid, **body}), mimetype="application/json")


def test_a_prediction_becomes_one_valid_event(tmp_path: Path) -> None:
    record = recorder(tmp_path)
    request, response = answer({"prediction": [[0.9, 0.05, 0.05]]}, "job-1")
    record.record(request, "job-1", "predict", response, 0.0012)
    record.record(request, "job-1", "health", response, 0.0001)  # not a recorded endpoint
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


def test_event_ids_are_unique_and_a_forked_copy_makes_its_own(tmp_path: Path) -> None:
    record = recorder(tmp_path)
    request, response = answer({"prediction": [[0.9, 0.05, 0.05]]}, "job-2")
    for _ in range(3):
        record.record(request, "job-2", "predict", response, 0.001)
    child = os.fork()
    if child == 0:  # the child records once and exits at once, pytest untouched
        record.record(request, "job-2", "predict", response, 0.001)
        os._exit(0)
    os.waitpid(child, 0)
    record.record(request, "job-2", "predict", response, 0.001)  # the parent's 4th
    ids = [event["id"] for event in spooled(tmp_path)]
    assert len(ids) == 5
    assert len(set(ids)) == 5
