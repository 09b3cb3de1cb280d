"""The sync-async functions in-process, as functions-framework builds them, with real
CloudEvents, a real slow model and a real job store (SQLite; redis-server for outages)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from functions.core import events
from functions.core.jobstore import Job, JobStore, open_store
from tests.contract.test_predict_tabular import assert_problem
from tests.helpers import AppThread, catch_all, free_port, function_client, sample_bytes
from tests.redis_server import RedisServer, running_redis

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


@pytest.mark.parametrize("path", ["/", "/dead-letter"])
def test_deeply_nested_json_is_a_400_naming_the_limit(worker: FlaskClient, path: str) -> None:
    """Was a RecursionError 500, which the broker retried."""
    response = worker.post(path, data=b"[" * 100_000, content_type="application/cloudevents+json")
    assert_problem(response, 400)
    assert f"deeper than {events.MAX_DEPTH}" in response.get_json()["detail"]


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


class Backends:
    """The fast model (always ``tabby``) and the event sink, real HTTP on loopback; the sink
    records the job id of every ``inference.requested`` event it takes and answers ``sink_status``, after running
    ``on_event`` (e.g. freezing the job store half-way through an accept)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.sink_status = 202
        self.on_event: Callable[[], None] = lambda: None
        self._thread = AppThread(catch_all(self._handle))
        self.url = self._thread.url

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path == "/predict/label":
            return web.json_response({"prediction": {"label": "tabby"}})
        event = orjson.loads(await request.read())
        if event["type"] != events.INFERENCE_REQUESTED:
            return web.Response(status=202)  # the proxy's prediction log
        self.on_event()
        if self.sink_status < 300:
            self.events.append(event[events.JOB_ID])
        return web.Response(status=self.sink_status)

    def stop(self) -> None:
        self._thread.stop()


@pytest.fixture
def backends() -> Iterator[Backends]:
    running = Backends()
    yield running
    running.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def proxy_on(store_url: str, backends: Backends) -> ContextManager[FlaskClient]:
    return function_client(
        "sync_async",
        "functions/sync_async/main.py",
        JOB_STORE_URL=store_url,
        FAST_URL=backends.url,
        SLOW_URL=f"http://127.0.0.1:{free_port()}",
        K_SINK=backends.url + "/sink",
    )


def accept(proxy: FlaskClient, rid: str, image: bytes = CAT) -> TestResponse:
    body = {"image_data": base64.b64encode(image).decode()}
    return proxy.post("/predict", json=body, headers={"X-Request-Id": rid})


def assert_retry_later(response: TestResponse) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "2"


def orphans(store: JobStore, ids: list[str], sent: list[str]) -> list[str]:
    """Jobs left pending with no event sent: nothing will ever end them but the deadline."""
    left = [(rid, store.get(rid)) for rid in ids]
    return [rid for rid, job in left if job and job.status == "pending" and rid not in sent]


def test_a_killed_redis_is_a_503_with_retry_after_on_every_path(
    own_redis: RedisServer, backends: Backends
) -> None:
    url = own_redis.url + "?socket_timeout=0.5"
    with (
        proxy_on(url, backends) as proxy,
        function_client(
            "async_worker", "functions/async_worker/main.py", JOB_STORE_URL=url
        ) as worker,
    ):
        assert accept(proxy, "up").status_code == 200
        own_redis.kill()
        assert_retry_later(accept(proxy, "down"))
        assert_retry_later(proxy.get("/predict/test", headers={"X-Request-Id": "down-2"}))
        assert_retry_later(proxy.get("/job/up"))
        health = proxy.get("/health/all")
        assert health.status_code == 200
        assert health.json is not None
        assert health.json["job_store"].startswith("redis: ")
        headers, body = requested("up")
        assert_retry_later(worker.post("/", headers=headers, data=body))
        headers |= {"ce-knativeerrorcode": "503"}
        assert_retry_later(worker.post("/dead-letter", headers=headers, data=body))
    assert backends.events == ["up"]


def test_a_store_frozen_mid_way_through_8_accepts_leaves_no_orphan(
    own_redis: RedisServer, backends: Backends
) -> None:
    ids = [f"burst-{i}" for i in range(8)]
    with proxy_on(own_redis.url + "?socket_timeout=0.3", backends) as proxy:
        answers = {}
        for i, rid in enumerate(ids):
            if i == 4:
                own_redis.freeze()  # the creates time out; they land once it thaws
            answers[rid] = accept(proxy, rid)
        own_redis.thaw()
        time.sleep(0.5)  # the writes that waited land now
        failed = [rid for rid in ids if answers[rid].status_code != 200]
        assert failed == ids[4:]
        for rid in failed:
            assert_retry_later(answers[rid])
        store = open_store(own_redis.url, ttl=60)
        try:
            left = orphans(store, ids, backends.events)  # until the client retries
            assert left
            assert set(left) <= set(failed)
            for rid in failed:  # the client's retries, with the same ids
                retried = accept(proxy, rid)
                assert retried.status_code == 200, retried.get_data(as_text=True)
                assert retried.json == {"job_id": rid, "efficientnet-lite0": "tabby"}
            assert orphans(store, ids, backends.events) == []
            assert sorted(backends.events) == ids
        finally:
            store.close()


def test_an_event_not_sent_marks_the_job_failed_at_once(
    store_url: str, store: JobStore, backends: Backends
) -> None:
    backends.sink_status = 503
    with proxy_on(store_url, backends) as proxy:
        response = accept(proxy, "n1")
        assert response.status_code == 503
        assert response.json is not None
        assert "send a new X-Request-Id" in response.json["detail"]
        job = store.get("n1")
        assert job is not None
        assert job.status == "failed"
        assert job.reason is not None
        assert job.reason.startswith("not queued: ")
        backends.sink_status = 202
        again = accept(proxy, "n1")
        assert again.status_code == 400
        assert again.json is not None
        assert "failed (not queued" in again.json["detail"]
    assert backends.events == []


def test_an_event_not_sent_with_the_store_frozen_too_is_taken_over_by_the_retry(
    own_redis: RedisServer, backends: Backends
) -> None:
    backends.sink_status, backends.on_event = 503, own_redis.freeze
    with proxy_on(own_redis.url + "?socket_timeout=0.3", backends) as proxy:
        response = accept(proxy, "m1")
        own_redis.thaw()
        assert_retry_later(response)
        assert response.json is not None
        assert "retry with the same X-Request-Id" in response.json["detail"]
        backends.sink_status, backends.on_event = 202, lambda: None
        assert accept(proxy, "m1").status_code == 200
    store = open_store(own_redis.url, ttl=60)
    try:
        job = store.get("m1")
        assert job is not None
        assert (job.status, job.queued) == ("pending", True)
    finally:
        store.close()
    assert backends.events == ["m1"]


def test_an_event_sent_but_not_marked_is_still_a_200(
    own_redis: RedisServer, backends: Backends
) -> None:
    backends.on_event = own_redis.freeze
    with proxy_on(own_redis.url + "?socket_timeout=0.3", backends) as proxy:
        response = accept(proxy, "q1")
        own_redis.thaw()
        assert response.status_code == 200
        backends.on_event = lambda: None
        assert accept(proxy, "q1").status_code == 200  # unmarked: sent again, harmless
    assert backends.events == ["q1", "q1"]


def test_a_second_accept_of_an_id(store_url: str, store: JobStore, backends: Backends) -> None:
    with proxy_on(store_url, backends) as proxy:
        assert accept(proxy, "s1").status_code == 200
        again = accept(proxy, "s1")  # e.g. the first answer was lost: the same answer
        assert again.status_code == 200
        assert again.json == {"job_id": "s1", "efficientnet-lite0": "tabby"}
        other = accept(proxy, "s1", sample_bytes("china.jpg"))
        assert other.status_code == 400
        assert other.json is not None
        assert "exists already" in other.json["detail"]
    assert backends.events == ["s1"]


def test_jobs_lost_to_a_redis_restart_are_not_read_as_expired(
    own_redis: RedisServer, backends: Backends
) -> None:
    with proxy_on(own_redis.url, backends) as proxy:
        assert accept(proxy, "early").status_code == 200
        own_redis.restart()  # empty, as a Redis without persistence comes back
        lost = proxy.get("/job/early")
        assert lost.status_code == 404
        assert lost.json is not None
        assert "the job store holds no jobs" in lost.json["detail"]
        assert accept(proxy, "late").status_code == 200
        lost = proxy.get("/job/early")
        assert lost.status_code == 404
        assert lost.json is not None
        assert "started empty at" in lost.json["detail"]
        assert "was lost, send it again" in lost.json["detail"]
        since = lost.headers["Job-Store-Since"]
        assert lost.json["detail"].count(since) == 1
        assert proxy.get("/job/late").status_code == 200


def test_an_sqlite_file_that_cannot_be_opened_is_a_503(tmp_path: Path, backends: Backends) -> None:
    (tmp_path / "file").write_text("")
    with proxy_on(f"sqlite:///{tmp_path / 'file' / 'jobs.sqlite3'}", backends) as proxy:
        assert_retry_later(accept(proxy, "x1"))
        assert_retry_later(proxy.get("/job/x1"))
        health = proxy.get("/health/all")
        assert health.status_code == 200
        assert health.json is not None
        assert health.json["job_store"].startswith("sqlite: ")
    assert backends.events == []
