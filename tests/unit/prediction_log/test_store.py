"""The log stores (SQLite, PostgreSQL), opened from their URL: idempotent on the event id,
and every query filter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from functions.prediction_log.store import (
    LogStore,
    PostgresLogStore,
    Query,
    SqliteLogStore,
    open_log_store,
)


def record(
    job: str, model: str = "iris-svc", variant: str = "v1", outlier: Any = False
) -> dict[str, Any]:
    return {
        "job_id": job, "service": "iris", "model": model, "version": "1", "variant": variant,
        "endpoint": "predict", "status": 200, "latency_ms": 0.5, "is_outlier": outlier,
    }  # fmt: skip


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL (127.0.0.1:5432, trust auth)."""
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
    try:
        conn = psycopg.connect(admin, autocommit=True)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {e}")
    name = f"mlf_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f"CREATE DATABASE {name}")
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogStore]:
    if request.param == "sqlite":
        s = open_log_store(f"sqlite:///{tmp_path / 'log.sqlite3'}")
        assert isinstance(s, SqliteLogStore)
    else:
        url = request.getfixturevalue("postgres_url")
        s = open_log_store(url)
        assert isinstance(s, PostgresLogStore)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE predictions")
    s.add("e1", "2026-01-01T10:00:00+00:00", record("j1"))
    s.add(
        "e2", "2026-01-01T11:00:00+00:00", record("j2", model="iris-rf", variant="rf", outlier=True)
    )
    s.add("e3", "2026-01-01T12:00:00+00:00", record("j3", outlier=[False, True]))
    s.add("e4", "2026-01-01T13:00:00+00:00", record("j1", variant="rf"))
    yield s
    s.close()


def test_a_sqlite_url_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "log.sqlite3"
    open_log_store(f"sqlite:///{path}").close()
    assert path.is_file()


def test_another_kind_of_url_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError, match="sqlite:///, postgresql://") as refused:
        open_log_store("mysql://app:s3cret@db/logs")
    assert "s3cret" not in str(refused.value)


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["event_id"] for r in rows]


def test_a_redelivered_event_is_stored_once(store: LogStore) -> None:
    assert store.add("e1", "2026-01-01T10:00:00+00:00", record("j1")) is False
    assert len(store.query(Query(limit=100))) == 4


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(), ["e1", "e2", "e3", "e4"]),
        (Query(job_id="j1"), ["e1", "e4"]),
        (Query(model="iris-rf"), ["e2"]),
        (Query(variant="rf"), ["e2", "e4"]),
        (Query(outlier=True), ["e2", "e3"]),  # an N-row record is an outlier when any row is
        (Query(outlier=False), ["e1", "e4"]),
        (Query(since=datetime(2026, 1, 1, 11, tzinfo=UTC)), ["e2", "e3", "e4"]),
        (Query(until=datetime(2026, 1, 1, 11, tzinfo=UTC)), ["e1"]),
        (Query(limit=2), ["e1", "e2"]),
    ],
)
def test_filters(store: LogStore, query: Query, expected: list[str]) -> None:
    assert ids(store.query(query)) == expected


def _open_and_close(url: str) -> None:
    open_log_store(url).close()


def test_two_services_starting_at_once_both_create_the_schema(postgres_url: str) -> None:
    """prediction-log and prediction-log-ingest open one fresh database as they start; before
    the lock, about one start in two died on a duplicate pg_type/pg_class row."""
    import multiprocessing

    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
    context = multiprocessing.get_context("spawn")
    for _ in range(4):
        name = f"mlf_race_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
        try:
            starts = [context.Process(target=_open_and_close, args=(url,)) for _ in range(3)]
            for start in starts:
                start.start()
            for start in starts:
                start.join(60)
            assert [start.exitcode for start in starts] == [0, 0, 0]
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
