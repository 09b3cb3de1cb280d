"""One contract, both job store backends, each against the real thing (SQLite, redis-server)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from functions.core.jobstore import TIMED_OUT, Job, JobStore, StoreUnavailable, open_store
from tests.helpers import wait_for
from tests.redis_server import RedisServer, redis_server, running_redis


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


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def unavailable(call: Callable[[], object]) -> StoreUnavailable:
    with pytest.raises(StoreUnavailable) as caught:
        call()
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"] == "2"
    return caught.value


def every_call(store: JobStore) -> list[Callable[[], object]]:
    return [
        lambda: store.create(pending("x")),
        lambda: store.get("x"),
        lambda: store.finish("x", "done", "e"),
        lambda: store.mark_queued("x"),
        lambda: store.since(),
        lambda: store.put_blob("x", b"data"),
        lambda: store.get_blob("x"),
    ]


def test_a_killed_redis_is_a_503_with_retry_after_on_every_call(own_redis: RedisServer) -> None:
    store = open_store(own_redis.url, ttl=60)
    try:
        assert store.create(pending("before"))
        own_redis.kill()
        for call in every_call(store):
            assert "redis" in unavailable(call).detail
        assert store.ping().startswith("redis: ")
        own_redis.start()  # back (empty): the store answers again on its own
        assert store.get("before") is None
        assert store.create(pending("after"))
    finally:
        store.close()


def test_a_frozen_redis_is_a_503_within_the_socket_timeout(own_redis: RedisServer) -> None:
    store = open_store(own_redis.url + "?socket_timeout=0.3", ttl=60)
    try:
        store.ping()
        own_redis.freeze()
        started = time.monotonic()
        for call in every_call(store):
            unavailable(call)
        assert time.monotonic() - started < 7 * 0.3 + 2  # no retries of a timed-out command
    finally:
        own_redis.thaw()
        store.close()


def test_an_sqlite_file_that_cannot_be_opened_is_a_503(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    store = open_store(f"sqlite:///{tmp_path / 'not-a-dir' / 'jobs.sqlite3'}", ttl=60)
    for call in every_call(store):
        assert "sqlite" in unavailable(call).detail
    assert store.ping().startswith("sqlite: ")
    store.close()


def test_a_locked_sqlite_file_is_a_503(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = open_store(f"sqlite:///{path}?timeout=0.1", ttl=60)
    assert store.create(pending("a"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing for longer than the timeout
    try:
        for call in (
            lambda: store.create(pending("b")),
            lambda: store.finish("a", "done", "e"),
            lambda: store.put_blob("a", b"data"),
        ):
            assert "locked" in unavailable(call).detail
        assert store.get("a") is not None  # WAL: readers still read
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.close()


def test_a_job_is_marked_queued_while_pending_only(store: JobStore) -> None:
    store.create(pending("a"))
    assert store.mark_queued("a")
    found = store.get("a")
    assert found is not None
    assert (found.status, found.queued) == ("pending", True)
    store.finish("a", "done", "e")
    assert not store.mark_queued("a")
    assert not store.mark_queued("unknown")


def test_since_is_when_the_store_started_empty(store: JobStore) -> None:
    assert store.since() is None
    before = time.time()
    store.create(pending("a"))
    since = store.since()
    assert since is not None
    assert before - 1 <= since <= time.time()
    store.create(pending("b"))
    assert store.since() == since


def test_a_restarted_redis_starts_a_new_epoch(own_redis: RedisServer) -> None:
    store = open_store(own_redis.url, ttl=60)
    try:
        store.create(pending("a"))
        first = store.since()
        own_redis.restart()
        assert store.since() is None  # it holds nothing: no job read from it can be trusted
        store.create(pending("b"))
        second = store.since()
        assert first is not None
        assert second is not None
        assert second > first
    finally:
        store.close()


def test_an_sqlite_file_from_before_the_epoch_cannot_tell_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, expires REAL NOT NULL, doc BLOB)")
    old.execute("INSERT INTO jobs VALUES ('a', ?, ?)", (time.time() + 60, pending("a").dumps()))
    old.commit()
    old.close()
    store = open_store(f"sqlite:///{path}", ttl=60)
    try:
        since = store.since()
        assert since is not None
        assert since <= time.time() - 60  # as old as the TTL: a missing job may have expired
        found = store.get("a")
        assert found is not None
        assert found.status == "pending"
    finally:
        store.close()


def test_a_job_written_by_another_version_reads_back() -> None:
    older = {"job_id": "a", "created": 1.0, "deadline": 2.0, "fast": {}, "status": "pending"}
    assert Job.loads(orjson.dumps(older)) == Job("a", 1.0, 2.0, {})
    newer = {**older, "digest": "d", "queued": True, "added_later": [1]}
    assert Job.loads(orjson.dumps(newer)) == Job("a", 1.0, 2.0, {}, digest="d", queued=True)
