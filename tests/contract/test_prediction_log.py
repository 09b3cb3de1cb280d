"""Contract of the prediction log's two Services, in-process over one store: real apps, real
CloudEvents. ``ingest`` (prediction_log_ingest) takes the events; ``log`` (prediction_log)
is the query API, sending the token unless a test says otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient

from functions.core import events
from functions.core.event_data import PredictionLogData
from functions.core.settings import REPO_ROOT
from tests.contract.test_predict_tabular import assert_problem
from tests.helpers import function_client, postgres_database

SOURCE = str(REPO_ROOT / "functions" / "prediction_log" / "main.py")
TOKEN = "contract-token-0123456789"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """What both Services open: one SQLite file (make dev), or one PostgreSQL database (the
    cluster's store; a database of its own on the machine's PostgreSQL, trust auth)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.sqlite3'}"
        return
    with postgres_database("mlf_contract") as url:
        yield url


@pytest.fixture
def ingest(store: str) -> Iterator[FlaskClient]:
    with function_client("prediction_log_ingest", SOURCE, LOG_STORE_URL=store) as client:
        yield client


@pytest.fixture
def log(store: str, ingest: FlaskClient) -> Iterator[FlaskClient]:
    with function_client("prediction_log", SOURCE, LOG_STORE_URL=store, API_TOKEN=TOKEN) as client:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
        yield client


def data(job: str = "j1", **changes: Any) -> dict[str, Any]:
    record = PredictionLogData(
        job_id=job, service="iris", model="iris-svc", version="1", variant="iris-00001",
        endpoint="predict", status=200, latency_ms=0.4, input={"data": [[1, 2, 3, 4]]},
        output={"prediction": [0.7, 0.1, 0.2]}, is_outlier=True, outlier_score=-1.4,
    )  # fmt: skip
    return {**record.model_dump(mode="json", exclude_none=True), **changes}


def post_binary(client: FlaskClient, event: events.CloudEvent) -> Any:
    headers, body = events.to_binary(event)
    return client.post("/", headers=headers, data=body)


def test_binary_and_structured_events_are_stored_once(
    ingest: FlaskClient, log: FlaskClient
) -> None:
    event = events.make(events.PREDICTION_LOGGED, "/functions/iris", data())
    assert post_binary(ingest, event).status_code == 202
    assert post_binary(ingest, event).status_code == 202  # a redelivery
    structured = {
        "specversion": "1.0", "id": "s-1", "source": "/functions/iris", "type": events.PREDICTION_LOGGED,
        "time": "2026-11-23T10:00:00+00:00", "datacontenttype": "application/json", "data": data("j2"),
    }  # fmt: skip
    response = ingest.post(
        "/", data=orjson.dumps(structured), content_type="application/cloudevents+json"
    )
    assert response.status_code == 202
    assert response.get_data() == b""  # an empty 2xx: what a Knative broker counts as delivered
    records = log.get("/logs").get_json()["records"]
    assert [r["job_id"] for r in records] == ["j2", "j1"]  # ordered by time
    assert records[1]["event_id"] == event["id"]


def test_an_event_forged_with_a_services_id_does_not_suppress_its_record(
    ingest: FlaskClient, log: FlaskClient
) -> None:
    """The sink deduped on the id alone: an event posted first with a Service's next id (from
    another source) made the Service's own record a "redelivery", dropped."""
    forged = events.make(events.PREDICTION_LOGGED, "/forger", data("forged"), id="next-id")
    real = events.make(events.PREDICTION_LOGGED, "/functions/iris", data("real"), id="next-id")
    assert post_binary(ingest, forged).status_code == 202
    assert post_binary(ingest, real).status_code == 202
    assert post_binary(ingest, real).status_code == 202  # its redelivery is still stored once
    records = log.get("/logs").get_json()["records"]
    assert sorted(r["job_id"] for r in records) == ["forged", "real"]


def test_queries(ingest: FlaskClient, log: FlaskClient) -> None:
    post_binary(ingest, events.make(events.PREDICTION_LOGGED, "/functions/iris", data("a")))
    post_binary(
        ingest,
        events.make(
            events.PREDICTION_LOGGED, "/functions/iris", data("b", is_outlier=False, variant="rf")
        ),
    )
    assert [r["job_id"] for r in log.get("/logs?outlier=true").get_json()["records"]] == ["a"]
    assert [r["job_id"] for r in log.get("/logs?variant=rf").get_json()["records"]] == ["b"]
    assert [r["job_id"] for r in log.get("/logs?job_id=b").get_json()["records"]] == ["b"]
    assert log.get("/logs?since=2999-01-01T00:00:00").get_json()["records"] == []
    assert len(log.get("/logs?limit=1").get_json()["records"]) == 1


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=x", "since=yesterday", "outlier=maybe", "colour=red"]
)
def test_bad_queries_are_422(log: FlaskClient, query: str) -> None:
    assert_problem(log.get(f"/logs?{query}"), 422)


def test_bad_events_are_refused_without_asking_for_a_retry(
    ingest: FlaskClient, log: FlaskClient
) -> None:
    assert_problem(ingest.post("/", json={"not": "an event"}), 400)
    not_utf8 = ingest.post("/", data=b"\xff\xfe\x00", content_type="application/cloudevents+json")
    assert_problem(not_utf8, 400)
    wrong_type = events.make("dev.mlserving.other.v1", "/x", data())
    assert_problem(post_binary(ingest, wrong_type), 422)
    bad_data = events.make(events.PREDICTION_LOGGED, "/x", {"job_id": "j"})
    assert_problem(post_binary(ingest, bad_data), 422)
    assert log.get("/logs").get_json()["records"] == []


def test_deeply_nested_json_is_a_400_naming_the_limit(ingest: FlaskClient) -> None:
    """Was a RecursionError 500 (the SDK's stdlib json), which a broker retries."""
    for body in (b"[" * 100_000, b'{"specversion": "1.0", "data": ' + b"[" * 100_000):
        response = ingest.post("/", data=body, content_type="application/cloudevents+json")
        assert_problem(response, 400)
        assert f"deeper than {events.MAX_DEPTH}" in response.get_json()["detail"]


def test_feedback_needs_a_known_job_and_replaces_an_earlier_answer(
    ingest: FlaskClient, log: FlaskClient
) -> None:
    post_binary(ingest, events.make(events.PREDICTION_LOGGED, "/functions/iris", data("j9")))
    assert_problem(log.post("/feedback", json={"job_id": "nope", "label": "setosa"}), 404)
    first = log.post("/feedback", json={"job_id": "j9", "label": "setosa"}).get_json()
    assert first["replaced"] is False
    second = log.post("/feedback", json={"job_id": "j9", "label": "virginica"}).get_json()
    assert second["replaced"] is True
    assert_problem(log.post("/feedback", json={"job_id": "j9"}), 422)
    assert_problem(log.post("/feedback", data="label=x"), 415)


def test_ab_report_over_the_route(ingest: FlaskClient, log: FlaskClient) -> None:
    for job, variant, label in (
        ("a", "svc", "setosa"),
        ("b", "rf", "virginica"),
        ("c", "svc", "setosa"),
    ):
        record = data(job, variant=variant, route="ab-test", label=label, assignment="split")
        post_binary(ingest, events.make(events.PREDICTION_LOGGED, "/functions/iris", record))
    post_binary(
        ingest, events.make(events.PREDICTION_LOGGED, "/functions/iris", data("z"))
    )  # another route
    log.post("/feedback", json={"job_id": "a", "label": "setosa"})
    log.post("/feedback", json={"job_id": "c", "label": "virginica"})
    report = log.get("/ab-report?route=ab-test").get_json()
    assert set(report["variants"]) == {"svc", "rf"}
    assert report["variants"]["svc"]["requests"] == 2
    assert (report["variants"]["svc"]["labelled"], report["variants"]["svc"]["correct"]) == (2, 1)
    assert report["verdict"]["decided"] is False
    assert_problem(log.get("/ab-report?route=unknown"), 404)
    assert_problem(log.get("/ab-report"), 422)


# -- who may do what: the ingest takes events only, the query API needs the token ----------


def test_the_query_service_takes_no_events(ingest: FlaskClient, log: FlaskClient) -> None:
    event = events.make(events.PREDICTION_LOGGED, "/functions/iris", data("forged"))
    assert_problem(post_binary(log, event), 404)
    assert log.get("/logs").get_json()["records"] == []
    assert post_binary(ingest, event).status_code == 202
    assert [r["job_id"] for r in log.get("/logs").get_json()["records"]] == ["forged"]


def test_the_ingest_serves_no_queries(ingest: FlaskClient) -> None:
    for path in ("/logs", "/ab-report?route=ab-test"):
        assert_problem(ingest.get(path), 404)
    assert_problem(ingest.post("/feedback", json={"job_id": "j", "label": "x"}), 404)
    assert ingest.get("/health").status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", TOKEN, "Basic x"])
def test_every_query_path_needs_the_token(
    ingest: FlaskClient, log: FlaskClient, authorization: str | None
) -> None:
    post_binary(ingest, events.make(events.PREDICTION_LOGGED, "/functions/iris", data("j1")))
    headers = {"Authorization": authorization or ""}
    calls = [
        log.get("/logs?limit=1000", headers=headers),
        log.get("/ab-report?route=ab-test", headers=headers),
        log.post("/feedback", json={"job_id": "j1", "label": "setosa"}, headers=headers),
    ]
    for response in calls:
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "records" not in response.get_json()
    assert log.get("/health", headers=headers).status_code == 200
    # the refused feedback set nothing: the first accepted one replaces no earlier answer
    truth = log.post("/feedback", json={"job_id": "j1", "label": "setosa"}).get_json()
    assert truth["replaced"] is False


def test_the_token_opens_every_query_path(ingest: FlaskClient, log: FlaskClient) -> None:
    post_binary(ingest, events.make(events.PREDICTION_LOGGED, "/functions/iris", data("j1")))
    bearer = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive (RFC 9110)
    assert len(log.get("/logs?limit=1000", headers=bearer).get_json()["records"]) == 1
    assert log.post("/feedback", json={"job_id": "j1", "label": "setosa"}).status_code == 200


def test_without_a_token_configured_the_query_paths_say_why(
    ingest: FlaskClient, store: str
) -> None:
    with function_client("prediction_log", SOURCE, LOG_STORE_URL=store) as log:
        anything = {"Authorization": "Bearer anything-at-all-0123456"}
        for response in (
            log.get("/logs", headers=anything),
            log.post("/feedback", json={"job_id": "j", "label": "x"}, headers=anything),
            log.get("/ab-report?route=ab-test"),
        ):
            assert_problem(response, 503)
            assert "API_TOKEN" in response.get_json()["detail"]
        assert log.get("/health").status_code == 200


def test_the_openapi_document_declares_the_bearer_scheme(log: FlaskClient) -> None:
    document = log.get("/openapi.json", headers={"Authorization": ""}).get_json()
    assert document["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer"}
    }
    secured = {
        (path, method): spec.get("security")
        for path, methods in document["paths"].items()
        for method, spec in methods.items()
    }
    assert secured == {
        ("/logs", "get"): [{"bearerAuth": []}],
        ("/feedback", "post"): [{"bearerAuth": []}],
        ("/ab-report", "get"): [{"bearerAuth": []}],
        ("/health", "get"): None,
    }
