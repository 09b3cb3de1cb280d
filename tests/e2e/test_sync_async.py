"""Sync-async end to end: imagenet, the proxy, the worker, the broker and the gateway as real
processes, from the real manifests; faults from a real flaky front and a killed worker."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import yaml
from aiohttp import web

from functions.core.settings import REPO_ROOT
from tests.helpers import AppThread, LocalPlatform, sample_bytes, wait_for
from tests.redis_server import redis_server, running_redis

pytestmark = pytest.mark.e2e
SERVICES = ("imagenet", "sync-async", "async-worker")
# A uri Destination names its audience (Knative can read none off a uri): the worker's.
WORKER_AUDIENCE = "serving.knative.dev/service/ml-serving/async-worker"
CAT = {"image_data": base64.b64encode(sample_bytes("cat.png")).decode()}
CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def write_platform(root: Path, subscriber: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Copies of the real manifests; ``subscriber`` replaces the Trigger's (a flaky front)."""
    knative, eventing = root / "knative", root / "eventing"
    (knative / "services").mkdir(parents=True)
    eventing.mkdir()
    for name in SERVICES:
        shutil.copy(REPO_ROOT / "knative" / "services" / f"{name}.yaml", knative / "services")
    (knative / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"namespace": "ml-serving", "resources": [f"services/{n}.yaml" for n in SERVICES]}
        )
    )
    for name in ("broker.yaml", "sink-binding.yaml"):
        shutil.copy(REPO_ROOT / "eventing" / name, eventing)
    docs = list(yaml.safe_load_all((REPO_ROOT / "eventing" / "sync-async.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "Trigger" and subscriber is not None:
            doc["spec"]["subscriber"] = subscriber
    (eventing / "sync-async.yaml").write_text(yaml.safe_dump_all(docs))
    (eventing / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "namespace": "ml-serving",
                "resources": ["broker.yaml", "sink-binding.yaml", "sync-async.yaml"],
            }
        )
    )
    return knative, eventing


def start(root: Path, subscriber: dict[str, Any] | None = None, **env: str) -> LocalPlatform:
    knative, eventing = write_platform(root, subscriber)
    store = f"sqlite:///{root / 'jobs.sqlite3'}"
    state = {"JOB_STORE_URL": store, "OUTBOX_DIR": str(root / "outbox")}
    return LocalPlatform(knative, eventing, {**state, **env})


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LocalPlatform]:
    running = start(tmp_path, INLINE_MAX_BYTES="1000000")
    yield running
    running.stop()


def job(platform: LocalPlatform, job_id: str) -> httpx.Response:
    return httpx.get(f"{platform.url}/sync-async/job/{job_id}")


def ended(platform: LocalPlatform, job_id: str, seconds: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        entry: dict[str, Any] = job(platform, job_id).json()[job_id]
        return entry if entry["status"] != "pending" else None

    return wait_for(check, seconds, f"job {job_id} to end")


def submit(platform: LocalPlatform, rid: str, body: dict[str, str] = CAT) -> dict[str, Any]:
    response = httpx.post(
        f"{platform.url}/sync-async/predict", json=body, headers={"X-Request-Id": rid}, timeout=30
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_cat_answers_now_and_the_slow_model_later(platform: LocalPlatform) -> None:
    answer = submit(platform, "cat-1")
    assert answer["job_id"] == "cat-1"
    assert answer["efficientnet-lite0"] in CAT_CLASSES
    pending = job(platform, "cat-1")  # visible the moment the POST returned
    assert pending.status_code == 200
    assert pending.json()["cat-1"]["status"] in ("pending", "done")
    done = ended(platform, "cat-1")
    assert done["status"] == "done", done
    assert done["prediction"] in CAT_CLASSES
    assert done["model"] == "efficientnet-lite2"
    assert done["fast"] == {
        "model": "efficientnet-lite0",
        "prediction": answer["efficientnet-lite0"],
    }


def test_unknown_job_is_404_and_bad_input_creates_no_job(platform: LocalPlatform) -> None:
    assert job(platform, "nobody").status_code == 404
    url = f"{platform.url}/sync-async/predict"
    for rid, kwargs, status in (
        ("bad-b64", {"json": {"image_data": "***"}}, 422),
        ("bad-image", {"json": {"image_data": base64.b64encode(b"not an image").decode()}}, 422),
        ("bad-field", {"json": {"image": "x"}}, 422),
        ("bad-json", {"content": b"{", "headers": {"Content-Type": "application/json"}}, 400),
    ):
        headers = {"X-Request-Id": rid, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        response = httpx.post(url, headers=headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (rid, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert job(platform, rid).status_code == 404, rid


def test_test_endpoint_health_and_metadata(platform: LocalPlatform) -> None:
    answer = httpx.get(f"{platform.url}/sync-async/predict/test", timeout=30).json()
    assert ended(platform, answer["job_id"])["status"] == "done"
    health = httpx.get(f"{platform.url}/sync-async/health/all").json()
    assert {k: v for k, v in health.items() if k != "job_id"} == {
        "efficientnet-lite0": "ok",
        "efficientnet-lite2": "ok",
        "job_store": "ok",
        "event_sink": "ok",
    }
    meta = httpx.get(f"{platform.url}/sync-async/metadata").json()
    assert meta["efficientnet-lite0"]["model"] == "efficientnet-lite0"
    assert meta["efficientnet-lite2"]["model"] == "efficientnet-lite2"


def test_large_input_travels_by_reference(tmp_path: Path) -> None:
    running = start(tmp_path, INLINE_MAX_BYTES="1000")
    try:
        submit(running, "large-1")
        done = ended(running, "large-1")
        assert done["status"] == "done"
        assert done["prediction"] in CAT_CLASSES
        with closing(sqlite3.connect(tmp_path / "jobs.sqlite3")) as db:
            (size,) = db.execute("SELECT length(data) FROM blobs WHERE key = 'large-1'").fetchone()
        assert size == len(sample_bytes("cat.png"))
    finally:
        running.stop()


class FlakyFront:
    """A real HTTP hop in front of the worker answering 503 to the first ``failures``
    deliveries of each event (all of them when None), forwarding the others (their token
    too: the Trigger names the worker's audience)."""

    def __init__(self, failures: int | None) -> None:
        self.failures, self.target = failures, ""
        self.attempts: dict[str, int] = {}
        app = web.Application()
        app.router.add_post("/", self._deliver)
        self.thread = AppThread(app)

    async def _deliver(self, request: web.Request) -> web.Response:
        event_id = request.headers["ce-id"]
        self.attempts[event_id] = self.attempts.get(event_id, 0) + 1
        if self.failures is None or self.attempts[event_id] <= self.failures:
            return web.Response(status=503, text="injected failure")
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower().startswith(("ce-", "content-type", "x-request-id", "authorization"))
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.target, data=await request.read(), headers=headers) as answer,
        ):
            body = await answer.read()
            kept = {
                k: v
                for k, v in answer.headers.items()
                if k.lower().startswith(("ce-", "content-type"))
            }
            return web.Response(status=answer.status, body=body, headers=kept)


@pytest.fixture
def front() -> Iterator[Callable[[int | None], FlakyFront]]:
    made: list[FlakyFront] = []

    def make(failures: int | None) -> FlakyFront:
        made.append(FlakyFront(failures))
        return made[-1]

    yield make
    for flaky in made:
        flaky.thread.stop()


def test_worker_failing_twice_then_succeeding_ends_done_once(
    tmp_path: Path, front: Callable[[int | None], FlakyFront]
) -> None:
    flaky = front(2)
    running = start(tmp_path, {"uri": flaky.thread.url + "/", "audience": WORKER_AUDIENCE})
    flaky.target = f"{running.url}/async-worker/"
    try:
        submit(running, "flaky-1")
        done = ended(running, "flaky-1")
        assert done["status"] == "done"
        assert done["prediction"] in CAT_CLASSES
        assert list(flaky.attempts.values()) == [3]
        stats = httpx.get(f"{running.broker.url}/_stats").json()
        assert (stats["retries"], stats["delivered"], stats.get("dead_lettered", 0)) == (2, 1, 0)
    finally:
        running.stop()


def test_worker_always_failing_ends_failed_with_the_reason(
    tmp_path: Path, front: Callable[[int | None], FlakyFront]
) -> None:
    flaky = front(None)
    running = start(tmp_path, {"uri": flaky.thread.url + "/", "audience": WORKER_AUDIENCE})
    try:
        submit(running, "doomed-1")
        failed = ended(running, "doomed-1")
        assert failed["status"] == "failed"
        assert "503" in failed["reason"]
        assert "injected failure" in failed["reason"]
        assert failed["prediction"] is None
        assert list(flaky.attempts.values()) == [7]  # the first delivery and 6 retries
    finally:
        running.stop()


def test_killed_worker_loses_no_job(platform: LocalPlatform) -> None:
    worker = platform.launcher.revisions["async-worker"]
    ids = [f"kill-{i}" for i in range(8)]
    for rid in ids[:4]:
        submit(platform, rid)
    assert worker.pid is not None
    os.killpg(worker.pid, signal.SIGKILL)  # jobs in flight; the launcher restarts it
    for rid in ids[4:]:
        submit(platform, rid)
    statuses = {rid: ended(platform, rid, 90)["status"] for rid in ids}
    assert statuses == dict.fromkeys(ids, "done")
    assert worker.restarts == 1
    stats = httpx.get(f"{platform.broker.url}/_stats").json()
    # What came while it restarted was held by the activator, not refused: few retries, if
    # any (a delivery on the wire at the kill), and none lost.
    assert stats.get("retries", 0) <= 4
    assert stats.get("lost", 0) == stats.get("dead_lettered", 0) == 0


def test_the_flow_over_redis_and_a_result_past_its_ttl_is_gone(tmp_path: Path) -> None:
    with redis_server() as url:
        running = start(tmp_path, JOB_STORE_URL=url, JOB_TTL_SECONDS="3")
        try:
            submit(running, "redis-1")
            done = ended(running, "redis-1")
            assert done["status"] == "done"
            assert done["prediction"] in CAT_CLASSES
            health = httpx.get(f"{running.url}/sync-async/health/all").json()
            assert health["job_store"] == "ok"
            wait_for(
                lambda: True if job(running, "redis-1").status_code == 404 else None,
                10,
                "the result to expire",
            )
        finally:
            running.stop()


def test_a_redis_outage_is_a_503_with_retry_after_and_a_reset_reads_as_lost(
    tmp_path: Path,
) -> None:
    with running_redis() as redis:
        running = start(tmp_path, JOB_STORE_URL=redis.url + "?socket_timeout=1")
        try:
            submit(running, "before-outage")
            assert ended(running, "before-outage")["status"] == "done"
            redis.kill()
            down = httpx.post(f"{running.url}/sync-async/predict", json=CAT, timeout=30)
            for answer in (down, job(running, "before-outage")):
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "2"
                assert "job store (redis) is unavailable" in answer.json()["detail"]
            health = httpx.get(f"{running.url}/sync-async/health/all")
            assert health.status_code == 200
            assert health.json()["job_store"].startswith("redis: ")
            redis.start()  # back without its data, as a Redis without persistence comes back
            submit(running, "after-reset")
            assert ended(running, "after-reset")["status"] == "done"
            lost = job(running, "before-outage")
            assert lost.status_code == 404
            assert "started empty at" in lost.json()["detail"]
            assert lost.headers["Job-Store-Since"] in lost.json()["detail"]
        finally:
            running.stop()
