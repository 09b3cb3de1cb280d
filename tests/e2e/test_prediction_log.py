"""Prediction log end to end: real predictor, broker, log processes; kills included."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from emulators.oidc import trigger_subject
from functions.core import events
from functions.core.event_data import PredictionLogData
from functions.core.settings import REPO_ROOT
from tests.helpers import LocalPlatform, copy_kustomization, wait_for

pytestmark = pytest.mark.e2e
SETOSA = {"data": [[5.1, 3.5, 1.4, 0.2]]}
TOKEN = "e2e-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
LOG_SERVICES = ("prediction-log", "prediction-log-ingest", "prediction-log-dead-letter")
FREEZE_SECONDS = 90.0
# The Triggers' audiences name it (eventing/prediction-log.yaml): the Services check theirs.
NAMESPACE = "ml-serving"
INGEST_AUDIENCE = f"serving.knative.dev/service/{NAMESPACE}/prediction-log-ingest"


@pytest.fixture
def platform(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalPlatform]:
    """iris + the prediction log's three Services + the Broker, Trigger and SinkBinding from
    the real manifests; the broker's backoffs at a fifth of theirs, or at the ``time_scale``
    a test marks."""
    marker = request.node.get_closest_marker("time_scale")
    services = [f"services/{name}.yaml" for name in ("iris", *LOG_SERVICES)]
    knative = copy_kustomization(REPO_ROOT / "knative", tmp_path / "knative", services, NAMESPACE)
    # The tests freeze or kill the one process the Trigger delivers to: the autoscaler must
    # not add a second one beside it (as it would for the deliveries piling up there).
    ingest = knative / "services" / "prediction-log-ingest.yaml"
    doc = yaml.safe_load(ingest.read_text())
    doc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] = "1"
    ingest.write_text(yaml.safe_dump(doc))
    resources = ["broker.yaml", "sink-binding.yaml", "prediction-log.yaml"]
    eventing = copy_kustomization(
        REPO_ROOT / "eventing", tmp_path / "eventing", resources, NAMESPACE
    )
    env = {
        "LOG_STORE_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        "DEAD_LETTER_DIR": str(tmp_path / "dead-letters"),
        "API_TOKEN": TOKEN,
    }
    running = LocalPlatform(knative, eventing, env, *(marker.args if marker else ()))
    yield running
    running.stop()


def records(platform: LocalPlatform, **query: Any) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{platform.url}/prediction-log/logs", params={"limit": 10000, **query}, headers=BEARER
    )
    return list(response.json()["records"]) if response.status_code == 200 else []


def until(check: Callable[[], bool], seconds: float = 60) -> None:
    wait_for(lambda: True if check() else None, seconds, "the prediction log to settle")


def predict(platform: LocalPlatform, n: int, prefix: str) -> list[str]:
    answered = []
    with httpx.Client(base_url=platform.url) as client:
        for i in range(n):
            rid = f"{prefix}-{i}"
            response = client.post("/iris/predict", json=SETOSA, headers={"X-Request-Id": rid})
            if response.status_code == 200:
                answered.append(rid)
    return answered


def test_n_predictions_make_exactly_n_records(platform: LocalPlatform) -> None:
    answered = predict(platform, 40, "n")
    until(lambda: len(records(platform)) >= 40)
    found = records(platform)
    assert sorted(r["job_id"] for r in found) == sorted(answered)
    assert {(r["model"], r["version"], r["variant"], r["service"]) for r in found} == {
        ("iris-svc", "1", "iris-00001", "iris")
    }
    assert all(r["is_outlier"] is False and r["outlier_score"] > 0 for r in found)


def test_ids_forged_from_another_source_suppress_no_record(platform: LocalPlatform) -> None:
    """Event ids were a per-process prefix and a counter, shown in /logs, and the sink deduped
    on the id alone: events posted with the next ids suppressed the next real records. Now
    they are random UUIDs, and an id is a record's only with its source. (The forger here
    gets past the ingest's token check, with a token the broker signed for it: the ids
    alone must not let it suppress anything.)"""
    answered = predict(platform, 5, "first")
    until(lambda: len(records(platform)) == 5)
    seen = [r["event_id"] for r in records(platform)]
    assert all(uuid.UUID(i).version == 4 for i in seen)
    assert len({i[:8] for i in seen}) == 5  # no shared prefix to count on from
    ingest = platform.launcher.revisions["prediction-log-ingest"].url
    token = platform.issuer.token(INGEST_AUDIENCE, trigger_subject(NAMESPACE, "prediction-log"))
    for event_id in seen:  # the ids a forger can read, claimed from another source
        record = PredictionLogData(
            job_id=f"forged-{event_id}", service="iris", model="iris-svc", version="1",
            variant="x", endpoint="predict", status=200, latency_ms=1.0,
        )  # fmt: skip
        event = events.make(
            events.PREDICTION_LOGGED, "/forger", record.model_dump(mode="json"), id=event_id
        )
        headers, body = events.to_binary(event)
        headers["Authorization"] = f"Bearer {token}"
        assert httpx.post(ingest, headers=headers, content=body).status_code == 202
    answered += predict(platform, 5, "then")
    until(lambda: len(records(platform)) == 15)
    jobs = [r["job_id"] for r in records(platform)]
    assert set(answered) <= set(jobs)
    assert len(jobs) == 15


def test_the_log_is_read_and_labelled_with_the_token_only(platform: LocalPlatform) -> None:
    """Before the token, GET /logs?limit=1000 gave every record to anyone, and anyone could
    set any job's label."""
    (job,) = predict(platform, 1, "secret")
    until(lambda: len(records(platform)) == 1)
    logs, feedback = (
        f"{platform.url}/prediction-log/logs",
        f"{platform.url}/prediction-log/feedback",
    )
    label = {"job_id": job, "label": "virginica"}
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        refused = [
            httpx.get(logs, params={"limit": 1000}, headers=headers),
            httpx.post(feedback, json=label, headers=headers),
        ]
        for response in refused:
            assert response.status_code == 401, response.text
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.headers["Content-Type"] == "application/problem+json"
    assert [r["job_id"] for r in records(platform)] == [job]
    answer = httpx.post(feedback, json=label, headers=BEARER).json()
    assert answer["replaced"] is False  # the refused ones set nothing


def test_the_query_service_takes_no_events(platform: LocalPlatform) -> None:
    """Only the ingest stores events: a CloudEvent posted to prediction-log is no route."""
    record = PredictionLogData(
        job_id="forged-1", service="iris", model="iris-svc", version="1", variant="x",
        endpoint="predict", status=200, latency_ms=1.0,
    )  # fmt: skip
    headers, body = events.to_binary(
        events.make(events.PREDICTION_LOGGED, "/forged", record.model_dump(mode="json"))
    )
    response = httpx.post(f"{platform.url}/prediction-log/", headers=headers, content=body)
    assert response.status_code == 404
    assert records(platform, job_id="forged-1") == []


def test_failed_requests_and_outliers_are_recorded(platform: LocalPlatform) -> None:
    with httpx.Client(base_url=platform.url) as client:
        client.post("/iris/predict", json={"data": [[1, 2, 3]]}, headers={"X-Request-Id": "bad-1"})
        client.post(
            "/iris/predict", json={"data": [[1, 2, 3, 4]]}, headers={"X-Request-Id": "odd-1"}
        )
    until(lambda: len(records(platform)) == 2)
    (bad,) = records(platform, job_id="bad-1")
    assert bad["status"] == 422
    assert "validation" in bad["error"]
    (odd,) = records(platform, outlier="true")
    assert odd["job_id"] == "odd-1"
    assert odd["outlier_score"] < 0


def test_the_sink_stopped_then_restarted_still_gets_exactly_n(platform: LocalPlatform) -> None:
    sink = platform.launcher.revisions["prediction-log-ingest"]
    first = predict(platform, 10, "before")
    until(lambda: len(records(platform)) == 10)
    pid = sink.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the launcher restarts it after a backoff
    during = predict(platform, 30, "during")
    until(lambda: sink.pid != pid and sink.wait_ready(0) and len(records(platform)) >= 40, 90)
    jobs = [r["job_id"] for r in records(platform)]
    assert sorted(jobs) == sorted(first + during)  # none lost, none twice


def test_a_killed_predictor_loses_no_answered_prediction(platform: LocalPlatform) -> None:
    iris = platform.launcher.revisions["iris"]
    answered: list[str] = []
    with httpx.Client(base_url=platform.url) as client:
        for i in range(200):
            if i == 100:
                assert iris.pid is not None
                os.killpg(iris.pid, signal.SIGKILL)  # the container dies mid-stream
            try:
                response = client.post(
                    "/iris/predict", json=SETOSA, headers={"X-Request-Id": f"k-{i}"}
                )
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                answered.append(f"k-{i}")
    assert iris.wait_ready(60)
    predict(platform, 1, "after")  # the new process adopts the old spool as it starts sending
    until(
        lambda: (
            {f"k-{i}" for i in range(100)} <= {r["job_id"] for r in records(platform)}
            and len(records(platform)) >= len(answered)
        ),
        90,
    )
    assert set(answered) <= {r["job_id"] for r in records(platform)}


@pytest.mark.time_scale(0.05)
@pytest.mark.timeout(FREEZE_SECONDS + 240)
def test_a_long_freeze_of_the_ingest_loses_nothing(platform: LocalPlatform) -> None:
    """The ingest frozen (SIGSTOP, as a hung process or node) for 90 s while iris serves: every
    answered prediction is stored once, none by hand. Was: the Trigger had no dead-letter sink,
    and what ran out of retries was lost. With the backoffs at a twentieth, the Trigger's budget
    (8 retries of up to 5 s each) is about a minute: the first events are dead-lettered, and
    replayed from the spool into the store; the last are retried until the ingest is back."""
    ingest = platform.launcher.revisions["prediction-log-ingest"]
    answered = predict(platform, 20, "before")
    until(lambda: len(records(platform)) == 20)
    assert ingest.pid is not None
    os.killpg(ingest.pid, signal.SIGSTOP)
    try:
        started, rounds = time.monotonic(), 0
        while time.monotonic() - started < FREEZE_SECONDS:  # bounded: about 10 a second
            answered += predict(platform, 10, f"frozen-{rounds}")
            rounds += 1
            time.sleep(1.0)
    finally:
        os.killpg(ingest.pid, signal.SIGCONT)
    frozen = len(answered) - 20
    assert frozen >= 500  # iris kept serving throughout
    until(lambda: len(records(platform)) >= len(answered), 180)
    jobs = [r["job_id"] for r in records(platform)]
    assert sorted(jobs) == sorted(answered)  # none lost, none twice
    stats = platform.events.stats
    assert stats["lost"] == 0
    assert stats["dead_lettered"] > 0  # the dead-letter path ran, not only the retries
    assert stats["delivered"] + stats["dead_lettered"] >= len(answered)
