"""The sync-async functions in-process, as functions-framework builds them, with real
CloudEvents, a real slow model and a real SQLite job store."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient

from functions.core import events
from functions.core.jobstore import Job, JobStore, open_store
from tests.helpers import free_port, function_client, sample_bytes

CAT = sample_bytes("cat.png")


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    opened = open_store(store_url, ttl=60)
    yield opened
    opened.close()


@pytest.fixture
def worker(store_url: str) -> Iterator[FlaskClient]:
    with function_client(
        "async_worker", "functions/async_worker/main.py", JOB_STORE_URL=store_url
    ) as client:
        yield client


def new_job(store: JobStore, job_id: str) -> None:
    now = time.time()
    assert store.create(Job(job_id, now, now + 60, {"model": "fast", "prediction": "tabby"}))


def requested(job_id: str, event_id: str = "e-1", **data: Any) -> tuple[dict[str, str], bytes]:
    body = data or {"image_data": base64.b64encode(CAT).decode()}
    event = events.make(
        events.INFERENCE_REQUESTED, "/sync-async", {"job_id": job_id, **body}, id=event_id
    )
    return events.to_binary(event)


def test_the_worker_stores_the_result_then_replies_completed(
    worker: FlaskClient, store: JobStore
) -> None:
    new_job(store, "j1")
    headers, body = requested("j1")
    response = worker.post("/", headers=headers, data=body)
    assert response.status_code == 200
    reply = events.parse(response.headers, response.data)
    assert reply["type"] == events.INFERENCE_COMPLETED
    assert reply["id"] == "e-1-completed"
    assert reply[events.JOB_ID] == "j1"
    job = store.get("j1")
    assert job is not None
    assert job.status == "done"
    assert job.event_id == "e-1"
    assert job.result["model"] == "efficientnet-lite2"
    assert job.result["prediction"] == reply.data["prediction"]


def test_a_redelivery_changes_nothing(worker: FlaskClient, store: JobStore) -> None:
    new_job(store, "j1")
    headers, body = requested("j1")
    assert worker.post("/", headers=headers, data=body).status_code == 200
    first = store.get("j1")
    again = worker.post("/", headers=headers, data=body)
    assert (again.status_code, again.data) == (202, b"")
    assert store.get("j1") == first


def test_the_dead_letter_marks_the_job_failed_with_the_reason(
    worker: FlaskClient, store: JobStore
) -> None:
    new_job(store, "j1")
    headers, body = requested("j1")
    detail = base64.b64encode(b'{"title": "Service unavailable"}').decode()
    headers |= {"ce-knativeerrorcode": "503", "ce-knativeerrordata": detail}
    assert worker.post("/dead-letter", headers=headers, data=body).status_code == 202
    job = store.get("j1")
    assert job is not None
    assert job.status == "failed"
    assert job.reason is not None
    assert "503" in job.reason
    assert "Service unavailable" in job.reason


def test_a_late_dead_letter_does_not_undo_done(worker: FlaskClient, store: JobStore) -> None:
    new_job(store, "j1")
    headers, body = requested("j1")
    worker.post("/", headers=headers, data=body)
    worker.post("/dead-letter", headers={**headers, "ce-knativeerrorcode": "0"}, data=body)
    job = store.get("j1")
    assert job is not None
    assert job.status == "done"


def test_a_pubsub_push_envelope_is_an_event(worker: FlaskClient, store: JobStore) -> None:
    new_job(store, "j1")
    data = {"job_id": "j1", "image_data": base64.b64encode(CAT).decode()}
    envelope = {
        "message": {
            "data": base64.b64encode(orjson.dumps(data)).decode(),
            "attributes": {
                "ce-specversion": "1.0",
                "ce-id": "m-1",
                "ce-source": "/sync-async",
                "ce-type": events.INFERENCE_REQUESTED,
                "content-type": "application/json",
            },
            "messageId": "1",
        },
        "subscription": "projects/p/subscriptions/async-worker",
    }
    response = worker.post("/", json=envelope)
    assert response.status_code == 200
    job = store.get("j1")
    assert job is not None
    assert (job.status, job.event_id) == ("done", "m-1")


def test_an_input_by_reference(worker: FlaskClient, store: JobStore) -> None:
    new_job(store, "j1")
    store.put_blob("j1", CAT)
    headers, body = requested("j1", image_ref="j1")
    assert worker.post("/", headers=headers, data=body).status_code == 200
    new_job(store, "j2")
    headers, body = requested("j2", image_ref="gone")
    assert worker.post("/", headers=headers, data=body).status_code == 202
    job = store.get("j2")
    assert job is not None
    assert (job.status, job.reason) == ("failed", "the input expired")


def test_unknown_jobs_are_acknowledged(worker: FlaskClient) -> None:
    headers, body = requested("nobody")
    assert worker.post("/", headers=headers, data=body).status_code == 202


def test_bad_events_are_4xx_which_the_broker_does_not_retry(
    worker: FlaskClient, store: JobStore
) -> None:
    new_job(store, "j1")
    assert worker.post("/", data=b"hello").status_code == 400
    other = events.make(events.PREDICTION_LOGGED, "/x", {"job_id": "j1"})
    headers, body = events.to_binary(other)
    assert worker.post("/", headers=headers, data=body).status_code == 422
    headers, body = requested("j1", image_data=base64.b64encode(b"not an image").decode())
    assert worker.post("/", headers=headers, data=body).status_code == 422
    headers, body = requested("j1", extra="field")
    assert worker.post("/", headers=headers, data=body).status_code == 422


def test_worker_health_and_metadata(worker: FlaskClient) -> None:
    assert worker.get("/health").status_code == 200
    meta = worker.get("/metadata").json
    assert meta is not None
    assert (meta["model"], meta["runtime"]) == ("efficientnet-lite2", "onnx")


@pytest.fixture
def proxy(store_url: str) -> Iterator[FlaskClient]:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with function_client(
        "sync_async",
        "functions/sync_async/main.py",
        JOB_STORE_URL=store_url,
        FAST_URL=nowhere,
        SLOW_URL=nowhere,
        K_SINK=nowhere,
    ) as client:
        yield client


def test_bad_input_is_4xx_and_creates_no_job(proxy: FlaskClient, store: JobStore) -> None:
    for rid, kwargs, status in (
        ("b1", {"json": {"image_data": "!!"}}, 422),
        ("b2", {"json": {"image_data": ""}}, 422),
        ("b3", {"json": {"image_data": "aGk=", "more": 1}}, 422),
        ("b4", {"data": b"image_data=x", "content_type": "text/plain"}, 415),
        ("b5", {"data": b"{", "content_type": "application/json"}, 400),
    ):
        response = proxy.post("/predict", headers={"X-Request-Id": rid}, **kwargs)
        assert response.status_code == status, (rid, response.json)
        assert response.json is not None
        assert response.json["instance"] == rid
        assert store.get(rid) is None


def test_an_unreachable_fast_model_answers_503_and_creates_no_job(
    proxy: FlaskClient, store: JobStore
) -> None:
    image = {"image_data": base64.b64encode(CAT).decode()}
    response = proxy.post("/predict", json=image, headers={"X-Request-Id": "f1"})
    assert response.status_code == 503
    assert store.get("f1") is None
    assert proxy.get("/job/f1").status_code == 404


@pytest.mark.parametrize("job_id", ["/x", "%2Fx", "a//b", "a%2F%2Fb", "x/"])
def test_a_job_id_with_slashes_is_a_404_problem(proxy: FlaskClient, job_id: str) -> None:
    response = proxy.get(f"/job/{job_id}")
    assert response.status_code == 404, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.json is not None
    assert response.json["instance"] == response.headers["X-Request-Id"]


def test_health_all_names_what_is_down(proxy: FlaskClient) -> None:
    assert proxy.get("/health").status_code == 200
    health = proxy.get("/health/all").json
    assert health is not None
    assert health["job_store"] == "ok"
    for key in ("efficientnet-lite0", "efficientnet-lite2"):
        assert "unreachable" in health[key]
    assert health["event_sink"].startswith("unreachable")
