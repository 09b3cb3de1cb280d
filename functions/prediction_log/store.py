"""The log store: records keyed by their CloudEvent id (so a redelivery stores nothing twice),
queryable by time, job, model, variant and outlier flag. SQLite is the embedded default
(WAL mode lets the query endpoint read while the subscriber writes; one pod). PostgreSQL is
the cluster backend: any number of log pods share it, and the same SQL answers the queries.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    event_id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    job_id TEXT NOT NULL,
    service TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    variant TEXT NOT NULL,
    status INTEGER NOT NULL,
    is_outlier INTEGER,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time);
CREATE INDEX IF NOT EXISTS predictions_job ON predictions (job_id);
"""


@dataclass(frozen=True)
class Query:
    job_id: str | None = None
    model: str | None = None
    variant: str | None = None
    outlier: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


class LogStore(Protocol):
    def add(self, event_id: str, time: str, record: dict[str, Any]) -> bool:
        """Store one record; False when this event id is already stored."""
        ...

    def query(self, query: Query) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def _row(event_id: str, time: str, record: dict[str, Any]) -> tuple[Any, ...]:
    outlier = record.get("is_outlier")
    return (
        event_id,
        time,
        record["job_id"],
        record["service"],
        record["model"],
        record["version"],
        record["variant"],
        record["status"],
        # an N-row request is an outlier record when any row is one
        None if outlier is None else int(any(outlier) if isinstance(outlier, list) else outlier),
        orjson.dumps(record).decode(),
    )


class SqliteLogStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def add(self, event_id: str, time: str, record: dict[str, Any]) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _row(event_id, time, record),
            )
        return cursor.rowcount == 1

    def query(self, query: Query) -> list[dict[str, Any]]:
        clauses, params = _where(query, "?")
        sql = f"SELECT event_id, time, record FROM predictions {clauses} ORDER BY time, event_id LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*params, query.limit)).fetchall()
        return [{"event_id": e, "time": t, **orjson.loads(r)} for e, t, r in rows]

    def close(self) -> None:
        self._db.close()


class PostgresLogStore:
    """The cluster backend (``LOG_STORE=postgres``, ``LOG_DSN``): a pool of connections."""

    def __init__(self, dsn: str) -> None:
        from psycopg_pool import ConnectionPool

        self._pool = ConnectionPool(
            dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True
        )
        with self._pool.connection() as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement.replace("is_outlier INTEGER", "is_outlier SMALLINT"))

    def add(self, event_id: str, time: str, record: dict[str, Any]) -> bool:
        with self._pool.connection() as conn:
            cursor = conn.execute(
                "INSERT INTO predictions VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (event_id) DO NOTHING",
                _row(event_id, time, record),
            )
            return cursor.rowcount == 1

    def query(self, query: Query) -> list[dict[str, Any]]:
        clauses, params = _where(query, "%s")
        sql = f"SELECT event_id, time, record FROM predictions {clauses} ORDER BY time, event_id LIMIT %s"
        with self._pool.connection() as conn:
            rows = conn.execute(sql, (*params, query.limit)).fetchall()
        return [{"event_id": e, "time": t, **orjson.loads(r)} for e, t, r in rows]

    def close(self) -> None:
        self._pool.close()


def _where(query: Query, mark: str) -> tuple[str, list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("job_id", query.job_id),
        ("model", query.model),
        ("variant", query.variant),
    ):
        if value is not None:
            conditions.append(f"{column} = {mark}")
            params.append(value)
    if query.outlier is not None:
        conditions.append(f"is_outlier = {mark}")
        params.append(int(query.outlier))
    if query.since is not None:
        conditions.append(f"time >= {mark}")
        params.append(query.since.isoformat())
    if query.until is not None:
        conditions.append(f"time < {mark}")
        params.append(query.until.isoformat())
    return ("WHERE " + " AND ".join(conditions)) if conditions else "", params
