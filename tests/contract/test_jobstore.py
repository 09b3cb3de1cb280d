"""One contract, both job store backends, each against the real thing (SQLite, redis-server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.core.jobstore import TIMED_OUT, Job, JobStore, open_store
from tests.helpers import wait_for
from tests.redis_server import redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    url: str = request.getfixturevalue("redis_url")
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    opened = open_store(store_url, ttl=60)
    yield opened
    opened.close()


def pending(job_id: str, deadline: float = 60) -> Job:
    now = time.time()
    return Job(job_id, now, now + deadline, {"model": "fast", "prediction": "tabby"})


def test_a_created_job_reads_back_pending(store: JobStore) -> None:
    assert store.create(pending("a"))
    found = store.get("a")
    assert found is not None
    assert (found.status, found.fast, found.result) == ("pending", pending("a").fast, {})
    assert store.get("unknown") is None


def test_an_id_is_created_once(store: JobStore) -> None:
    assert store.create(pending("a"))
    assert not store.create(pending("a"))


def test_a_job_ends_once(store: JobStore) -> None:
    store.create(pending("a"))
    assert store.finish("a", "done", "event-1", result={"prediction": "tiger cat"})
    assert not store.finish("a", "failed", "event-2", reason="late dead letter")
    assert not store.finish("a", "done", "event-1", result={"prediction": "other"})
    found = store.get("a")
    assert found is not None
    assert (found.status, found.result, found.event_id, found.reason) == (
        "done",
        {"prediction": "tiger cat"},
        "event-1",
        None,
    )
    assert not store.finish("unknown", "done", "event-3", result={})


def test_concurrent_finishes_have_one_winner(store_url: str) -> None:
    stores = [open_store(store_url, ttl=60) for _ in range(8)]
    stores[0].create(pending("race"))
    wins: list[bool] = []
    threads = [
        threading.Thread(target=lambda s=s, i=i: wins.append(s.finish("race", "done", f"e{i}")))
        for i, s in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for s in stores:
        s.close()
    assert sorted(wins) == [False] * 7 + [True]


def test_failed_keeps_the_reason(store: JobStore) -> None:
    store.create(pending("a"))
    assert store.finish("a", "failed", "event-1", reason="worker gave up")
    found = store.get("a")
    assert found is not None
    assert (found.status, found.reason) == ("failed", "worker gave up")


def test_a_pending_job_past_its_deadline_reads_timed_out(store: JobStore) -> None:
    store.create(pending("late", deadline=0.0))
    found = store.get("late")
    assert found is not None
    seen = found.seen_at(time.time() + 0.01)
    assert (seen.status, seen.reason) == ("failed", TIMED_OUT)
    assert found.seen_at(found.created).status == "pending"


def test_blobs_round_trip(store: JobStore) -> None:
    data = bytes(range(256)) * 1000
    store.put_blob("k", data)
    assert store.get_blob("k") == data
    assert store.get_blob("other") is None


def test_results_and_blobs_expire_after_the_ttl(store_url: str) -> None:
    short = open_store(store_url, ttl=1)
    try:
        short.create(pending("brief"))
        short.finish("brief", "done", "e", result={"prediction": "tabby"})
        short.put_blob("brief", b"image")
        assert short.get("brief") is not None
        wait_for(lambda: True if short.get("brief") is None else None, 5, "the job to expire")
        assert short.get_blob("brief") is None
    finally:
        short.close()


def test_ping(store: JobStore) -> None:
    assert store.ping() == "ok"


def test_unknown_url_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="sqlite:/// or redis://"):
        open_store("postgres://x", ttl=1)


def test_an_unreachable_redis_says_why() -> None:
    from tests.helpers import free_port

    unreachable = open_store(f"redis://127.0.0.1:{free_port()}/0", ttl=1)
    try:
        assert unreachable.ping().startswith("redis: ")
    finally:
        unreachable.close()
