"""The log stores (SQLite, PostgreSQL), opened from their URL: idempotent on the event id,
and every query filter."""

from __future__ import annotations

import sqlite3
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
from tests.helpers import postgres_database

SOURCE = "/functions/iris"


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
    with postgres_database("mlf_test") as url:
        yield url


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
    s.add(SOURCE, "e1", "2026-01-01T10:00:00+00:00", record("j1"))
    rf = record("j2", model="iris-rf", variant="rf", outlier=True)
    s.add(SOURCE, "e2", "2026-01-01T11:00:00+00:00", rf)
    s.add(SOURCE, "e3", "2026-01-01T12:00:00+00:00", record("j3", outlier=[False, True]))
    s.add(SOURCE, "e4", "2026-01-01T13:00:00+00:00", record("j1", variant="rf"))
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
    assert store.add(SOURCE, "e1", "2026-01-01T10:00:00+00:00", record("j1")) is False
    assert len(store.query(Query(limit=100))) == 4


def test_an_id_from_another_source_is_another_event(store: LogStore) -> None:
    """CloudEvents makes source and id unique together: keyed by the id alone, an event
    forged with a Service's next id made the sink drop the Service's own as a redelivery."""
    assert store.add("/forger", "e5", "2026-01-01T14:00:00+00:00", record("j5")) is True
    assert store.add(SOURCE, "e5", "2026-01-01T14:00:01+00:00", record("j6")) is True
    assert [
        r["job_id"] for r in store.query(Query(since=datetime(2026, 1, 1, 14, tzinfo=UTC)))
    ] == ["j5", "j6"]


_OLD_SCHEMA = """
CREATE TABLE predictions (
    event_id TEXT PRIMARY KEY, time TEXT NOT NULL, job_id TEXT NOT NULL, service TEXT NOT NULL,
    model TEXT NOT NULL, version TEXT NOT NULL, variant TEXT NOT NULL, route TEXT,
    status INTEGER NOT NULL, is_outlier SMALLINT, record TEXT NOT NULL
);
CREATE INDEX predictions_time ON predictions (time);
CREATE INDEX predictions_job ON predictions (job_id);
CREATE INDEX predictions_route ON predictions (route);
CREATE TABLE feedback (job_id TEXT PRIMARY KEY, label TEXT NOT NULL, time TEXT NOT NULL)
"""
_OLD_ROW = (
    "INSERT INTO predictions VALUES ('e1', '2026-01-01T10:00:00+00:00', 'j1', 'iris', "
    "'iris-svc', '1', 'v1', NULL, 200, 0, '{\"job_id\": \"j1\"}')"
)


def _old_store(url: str) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite://")) as db:
            db.executescript(_OLD_SCHEMA + ";" + _OLD_ROW)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS predictions, feedback")
        for statement in (*_OLD_SCHEMA.split(";"), _OLD_ROW):
            if statement.strip():
                conn.execute(statement)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_store_of_the_old_schema_is_keyed_anew_with_its_rows(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'old.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    _old_store(url)
    for opening in range(2):  # the second finds the new schema and leaves it be
        s = open_log_store(url)
        assert s.add(SOURCE, "e1", "2026-01-01T10:00:00+00:00", record("j1")) is False
        forged = s.add("/forger", "e1", "2026-01-01T10:00:00+00:00", record("j1"))
        assert forged is (opening == 0)
        assert [r["event_id"] for r in s.query(Query(job_id="j1"))] == ["e1", "e1"]
        assert s.has_job("j1")
        s.close()
    if backend == "postgres":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE predictions, feedback")


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
