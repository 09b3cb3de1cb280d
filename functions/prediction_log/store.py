"""The log store: records keyed by their CloudEvent source and id, which CloudEvents makes
unique together (so a redelivery stores nothing twice, and no sender can claim another
source's ids),
queryable by time, job, model, variant, route and outlier flag, plus the ground truth that
arrives later (``feedback``, one label per job: a second answer replaces the first).

SQLite is the embedded default (WAL mode lets queries read while the subscriber writes; the
processes of one machine: make dev's two log Services share the file). PostgreSQL is the
cluster backend: any number of pods of both Services share it. Both run the same
SQL, with their own placeholder and upsert spelling.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    time TEXT NOT NULL,
    job_id TEXT NOT NULL,
    service TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    variant TEXT NOT NULL,
    route TEXT,
    status INTEGER NOT NULL,
    is_outlier SMALLINT,
    record TEXT NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time);
CREATE INDEX IF NOT EXISTS predictions_job ON predictions (job_id);
CREATE INDEX IF NOT EXISTS predictions_route ON predictions (route);
CREATE TABLE IF NOT EXISTS feedback (
    job_id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    time TEXT NOT NULL
)
"""
# A table of the old schema (keyed by event_id alone) is keyed anew by (source, event_id);
# its rows get the source their Service's recorder gave them (core.recording).
_OLD_SOURCE = "'/functions/' || service"
_SQLITE_MIGRATE = f"""
ALTER TABLE predictions RENAME TO predictions_old;
DROP INDEX IF EXISTS predictions_time;
DROP INDEX IF EXISTS predictions_job;
DROP INDEX IF EXISTS predictions_route;
{_SCHEMA.split("CREATE TABLE IF NOT EXISTS feedback")[0]}
INSERT INTO predictions SELECT {_OLD_SOURCE}, * FROM predictions_old;
DROP TABLE predictions_old
"""
_POSTGRES_MIGRATE = f"""
ALTER TABLE predictions ADD COLUMN source TEXT;
UPDATE predictions SET source = {_OLD_SOURCE};
ALTER TABLE predictions ALTER COLUMN source SET NOT NULL;
ALTER TABLE predictions DROP CONSTRAINT predictions_pkey;
ALTER TABLE predictions ADD PRIMARY KEY (source, event_id)
"""
_OLD_TABLE = (  # an old-schema table: one that has no source column
    "SELECT 1 FROM {columns} WHERE {table} = 'predictions'"
    " AND NOT EXISTS (SELECT 1 FROM {columns} WHERE {table} = 'predictions' AND {name} = 'source')"
)
_COLUMNS = "source, event_id, time, job_id, service, model, version, variant, route, status, is_outlier, record"


@dataclass(frozen=True)
class Query:
    job_id: str | None = None
    model: str | None = None
    variant: str | None = None
    route: str | None = None
    outlier: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


class LogStore(Protocol):
    def add(self, source: str, event_id: str, time: str, record: dict[str, Any]) -> bool:
        """Store one record; False when this event (source and id) is already stored."""
        ...

    def query(self, query: Query) -> list[dict[str, Any]]: ...

    def has_job(self, job_id: str) -> bool: ...

    def set_feedback(self, job_id: str, label: str, time: str) -> bool:
        """Record the true label of a job; True when it replaced an earlier one."""
        ...

    def feedback(self, job_ids: list[str]) -> dict[str, str]: ...

    def close(self) -> None: ...


class _SqlStore:
    """The SQL both backends share; subclasses give a cursor factory and their dialect."""

    mark = "?"
    insert_ignore = "INSERT OR IGNORE INTO predictions ({cols}) VALUES ({marks})"
    upsert_feedback = (
        "INSERT INTO feedback VALUES ({m}, {m}, {m}) "
        "ON CONFLICT (job_id) DO UPDATE SET label = excluded.label, time = excluded.time"
    )
    cursor: Callable[[], AbstractContextManager[Any]]

    def add(self, source: str, event_id: str, time: str, record: dict[str, Any]) -> bool:
        sql = self.insert_ignore.format(cols=_COLUMNS, marks=", ".join([self.mark] * 12))
        with self.cursor() as cur:
            cur.execute(sql, _row(source, event_id, time, record))
            return bool(cur.rowcount == 1)

    def query(self, query: Query) -> list[dict[str, Any]]:
        clauses, params = _where(query, self.mark)
        sql = f"SELECT event_id, time, record FROM predictions {clauses} ORDER BY time, event_id LIMIT {self.mark}"
        with self.cursor() as cur:
            rows = cur.execute(sql, (*params, query.limit)).fetchall()
        return [{"event_id": e, "time": t, **orjson.loads(r)} for e, t, r in rows]

    def has_job(self, job_id: str) -> bool:
        with self.cursor() as cur:
            sql = f"SELECT 1 FROM predictions WHERE job_id = {self.mark} LIMIT 1"
            return cur.execute(sql, (job_id,)).fetchone() is not None

    def set_feedback(self, job_id: str, label: str, time: str) -> bool:
        with self.cursor() as cur:
            sql = f"SELECT 1 FROM feedback WHERE job_id = {self.mark}"
            replaced = cur.execute(sql, (job_id,)).fetchone() is not None
            cur.execute(self.upsert_feedback.format(m=self.mark), (job_id, label, time))
        return replaced

    def feedback(self, job_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self.cursor() as cur:
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start : start + 500]
                sql = f"SELECT job_id, label FROM feedback WHERE job_id IN ({', '.join([self.mark] * len(chunk))})"
                found.update(dict(cur.execute(sql, chunk).fetchall()))
        return found


class SqliteLogStore(_SqlStore):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A commit reaches the WAL file before it returns, so a crash of this process loses
        # nothing; only the OS going down may, until the next checkpoint. FULL would fsync
        # every logged prediction: ~2/3 of what storing one cost.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("BEGIN IMMEDIATE")  # the other log Service may start at once
        try:
            columns = "pragma_table_info('predictions')"
            old = _OLD_TABLE.format(columns=columns, table="'predictions'", name="name")
            if self._db.execute(old).fetchone() is not None:
                for statement in filter(str.strip, _SQLITE_MIGRATE.split(";")):
                    self._db.execute(statement)
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._lock = threading.Lock()

    @contextmanager
    def cursor(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            yield self._db.cursor()

    def close(self) -> None:
        self._db.close()


class PostgresLogStore(_SqlStore):
    """The cluster backend (``LOG_STORE_URL=postgresql://...``): a pool of connections."""

    mark = "%s"
    insert_ignore = (
        "INSERT INTO predictions ({cols}) VALUES ({marks}) "
        "ON CONFLICT (source, event_id) DO NOTHING"
    )

    def __init__(self, dsn: str) -> None:
        from psycopg_pool import ConnectionPool

        self._pool = ConnectionPool(
            dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True
        )
        # Both of the log's Services create the schema as they start, often at once: one
        # transaction under a lock, or the second's CREATE ... IF NOT EXISTS can still fail.
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('mlf_prediction_log_schema'))")
            columns = "information_schema.columns"
            table = "table_schema = current_schema() AND table_name"
            old = _OLD_TABLE.format(columns=columns, table=table, name="column_name")
            migrate = _POSTGRES_MIGRATE if conn.execute(old).fetchone() is not None else ""
            for statement in filter(str.strip, (migrate + ";" + _SCHEMA).split(";")):
                conn.execute(statement)

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        with self._pool.connection() as conn, conn.cursor() as cur:
            yield cur

    def close(self) -> None:
        self._pool.close()


_POSTGRES = ("postgresql://", "postgres://")  # libpq reads both
LOG_STORE_SCHEMES = ("sqlite:///", *_POSTGRES)


def open_log_store(url: str) -> LogStore:
    """``sqlite:///abs/path.sqlite3`` or ``postgresql://user:password@host/db``."""
    if url.startswith("sqlite:///"):
        return SqliteLogStore(Path(url.removeprefix("sqlite://")))
    if url.startswith(_POSTGRES):
        return PostgresLogStore(url)
    scheme = url.partition(":")[0]  # the rest may hold a password
    raise ValueError(
        f"log store URL must start with {', '.join(LOG_STORE_SCHEMES)}, not {scheme!r}"
    )


def _row(source: str, event_id: str, time: str, record: dict[str, Any]) -> tuple[Any, ...]:
    outlier = record.get("is_outlier")
    return (
        source,
        event_id,
        time,
        record["job_id"],
        record["service"],
        record["model"],
        record["version"],
        record["variant"],
        record.get("route"),
        record["status"],
        # an N-row request is an outlier record when any row is one
        None if outlier is None else int(any(outlier) if isinstance(outlier, list) else outlier),
        orjson.dumps(record).decode(),
    )


def _where(query: Query, mark: str) -> tuple[str, list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    equal = (
        ("job_id", query.job_id),
        ("model", query.model),
        ("variant", query.variant),
        ("route", query.route),
    )
    for column, value in equal:
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
