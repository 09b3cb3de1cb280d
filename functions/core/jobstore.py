"""The job store of asynchronous work: a job is ``pending`` until it ends ``done`` or ``failed``.

One small interface, two backends behind one URL setting: ``sqlite:///path`` (embedded, the
default; processes on one machine share the file in WAL mode) and ``redis://host:port/db``
(the cluster: every pod of the proxy and the worker shares it). A job ends once: the first
``finish`` wins, so a redelivered event or a late dead letter changes nothing. Jobs and
their input blobs expire ``ttl`` seconds after they were written (Redis ``EXPIRE``; SQLite
filters on read and deletes on write). A pending job past its deadline reads as failed.

A store that cannot answer (SQLite: a locked or unopenable file; Redis: refused, timed out,
out of memory) raises ``StoreUnavailable``, a 503 problem with ``Retry-After``, from every
method but ``ping``: the one place store errors become the answer, for every handler.
``since()`` tells when the store last started empty, so a reader can tell a job lost to a
reset (Redis restarted without its data) from one that expired.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson

from functions.core.errors import ServiceUnavailable

Status = Literal["pending", "done", "failed"]
TIMED_OUT = "timed out"
RETRY_AFTER_SECONDS = 2


class StoreUnavailable(ServiceUnavailable):
    """The job store did not answer: a 503 the client (or the broker) retries."""

    def __init__(self, backend: str, cause: BaseException) -> None:
        reason = " ".join(str(cause).split())[:200] or type(cause).__name__
        self.short = f"{backend}: {reason}"  # what /health/all reports
        super().__init__(
            f"the job store ({backend}) is unavailable: {reason}",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


@dataclass(frozen=True)
class Job:
    job_id: str
    created: float  # epoch seconds
    deadline: float  # epoch seconds: pending after this reads as failed
    fast: dict[str, Any]  # the synchronous model's answer
    status: Status = "pending"
    result: dict[str, Any] = field(default_factory=dict)  # the slow model's answer
    reason: str | None = None  # why it failed
    event_id: str | None = None  # the CloudEvent that finished it
    digest: str = ""  # of the input: a retry with the same id must send the same input
    queued: bool = False  # its inference.requested event was sent

    def seen_at(self, now: float) -> Job:
        """The job as a reader sees it at ``now``: a pending job past its deadline has failed."""
        if self.status == "pending" and now > self.deadline:
            return replace(self, status="failed", reason=TIMED_OUT)
        return self

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes | str) -> Job:
        """A stored job; fields a newer writer added are left out (pods of two versions share
        one store during a rollout), missing ones take their defaults."""
        doc = orjson.loads(raw)
        return cls(**{k: v for k, v in doc.items() if k in _JOB_FIELDS})


_JOB_FIELDS = frozenset(f.name for f in fields(Job))


class JobStore(Protocol):
    def create(self, job: Job) -> bool:
        """Store a new pending job; False when the id exists already."""
        ...

    def get(self, job_id: str) -> Job | None:
        """The job as stored (None when unknown or expired); see ``Job.seen_at``."""
        ...

    def finish(self, job_id: str, status: Status, event_id: str, **values: Any) -> bool:
        """End a pending job (``result=`` or ``reason=``); False when it had ended already."""
        ...

    def mark_queued(self, job_id: str) -> bool:
        """Note that a pending job's event was sent; False when it had ended already."""
        ...

    def since(self) -> float | None:
        """When the store last started empty (epoch seconds; written with its first job),
        None when it holds no job at all."""
        ...

    def put_blob(self, key: str, data: bytes) -> None: ...

    def get_blob(self, key: str) -> bytes | None: ...

    def ping(self) -> str:
        """``ok`` or the reason the store cannot be used."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, expires REAL NOT NULL, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, expires REAL NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires);
CREATE INDEX IF NOT EXISTS blobs_expires ON blobs (expires);
"""


class _PendingChanges(ABC):
    """What both stores write the same way: a change to a job still pending, made as one
    step by the store's ``_change_pending``."""

    def finish(self, job_id: str, status: Status, event_id: str, **values: Any) -> bool:
        return self._change_pending(
            job_id, lambda job: replace(job, status=status, event_id=event_id, **values)
        )

    def mark_queued(self, job_id: str) -> bool:
        return self._change_pending(job_id, lambda job: replace(job, queued=True))

    @abstractmethod
    def _change_pending(self, job_id: str, change: Callable[[Job], Job]) -> bool:
        """Apply ``change`` to a pending job; False when it is not pending (or not there)."""


class SqliteJobStore(_PendingChanges):
    """Embedded: one file, any number of processes on this machine (WAL, busy timeout).

    The file is opened on first use, so a store that cannot be opened yet is a 503 per
    request rather than a function that cannot start."""

    def __init__(self, path: Path, ttl: float, timeout: float = 5.0) -> None:
        self.path, self.ttl, self.timeout = path, ttl, timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connected()
            except sqlite3.ProgrammingError:  # a bug (e.g. used after close), not an outage
                raise
            except (sqlite3.DatabaseError, OSError) as e:
                raise StoreUnavailable("sqlite", e) from e

    def _connected(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                # A file written before the epoch existed: its jobs are older than we can tell.
                conn.execute(
                    "INSERT OR IGNORE INTO meta SELECT 'epoch', ? WHERE EXISTS (SELECT 1 FROM jobs)",
                    (time.time() - self.ttl,),
                )
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def create(self, job: Job) -> bool:
        now = time.time()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM jobs WHERE expires <= ?", (now,))
                db.execute("DELETE FROM blobs WHERE expires <= ?", (now,))
                db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (now,))
                cursor = db.execute(
                    "INSERT OR IGNORE INTO jobs VALUES (?, ?, ?)",
                    (job.job_id, now + self.ttl, job.dumps()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.rollback()
                raise
        return cursor.rowcount == 1

    def get(self, job_id: str) -> Job | None:
        with self._db() as db:
            row = db.execute(
                "SELECT doc FROM jobs WHERE job_id = ? AND expires > ?", (job_id, time.time())
            ).fetchone()
        return Job.loads(row[0]) if row else None

    def _change_pending(self, job_id: str, change: Callable[[Job], Job]) -> bool:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # read and write as one step across processes
            try:
                row = db.execute(
                    "SELECT doc FROM jobs WHERE job_id = ? AND expires > ?", (job_id, time.time())
                ).fetchone()
                job = Job.loads(row[0]) if row else None
                if job is None or job.status != "pending":
                    db.execute("COMMIT")
                    return False
                db.execute(
                    "UPDATE jobs SET doc = ?, expires = ? WHERE job_id = ?",
                    (change(job).dumps(), time.time() + self.ttl, job_id),
                )
                db.execute("COMMIT")
                return True
            except BaseException:
                db.rollback()
                raise

    def since(self) -> float | None:
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'epoch'").fetchone()
        return float(row[0]) if row else None

    def put_blob(self, key: str, data: bytes) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)", (key, time.time() + self.ttl, data)
            )

    def get_blob(self, key: str) -> bytes | None:
        with self._db() as db:
            row = db.execute(
                "SELECT data FROM blobs WHERE key = ? AND expires > ?", (key, time.time())
            ).fetchone()
        return bytes(row[0]) if row else None

    def ping(self) -> str:
        try:
            with self._db() as db:
                db.execute("SELECT 1").fetchone()
        except StoreUnavailable as e:
            return e.short
        return "ok"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# Changes a pending job atomically on the server: KEYS[1] job key; ARGV: new doc, ttl seconds.
_CHANGE_PENDING = """
local doc = redis.call('GET', KEYS[1])
if not doc or cjson.decode(doc)['status'] ~= 'pending' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
_EPOCH = "jobstore:epoch"  # no TTL: written with the first job after the store started empty


class RedisJobStore(_PendingChanges):
    """The cluster backend: ``SET NX EX`` creates, a server-side script changes a pending job.

    A command is not retried on a timeout (the write may have landed; the caller's own
    retry finds it), only once on a dropped connection, so an outage answers within about
    ``socket_timeout`` (5 s; ``?socket_timeout=`` in the URL)."""

    def __init__(self, url: str, ttl: float) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.ttl = max(1, int(ttl))
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=5,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        self._change = self._redis.register_script(_CHANGE_PENDING)

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.RedisError as e:
            raise StoreUnavailable("redis", e) from e

    def create(self, job: Job) -> bool:
        with self._unavailable():
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(_EPOCH, repr(time.time()), nx=True)
            pipe.set(f"job:{job.job_id}", job.dumps(), nx=True, ex=self.ttl)
            return bool(pipe.execute()[1])

    def get(self, job_id: str) -> Job | None:
        with self._unavailable():
            raw = self._redis.get(f"job:{job_id}")
        return Job.loads(raw) if raw else None

    def _change_pending(self, job_id: str, change: Callable[[Job], Job]) -> bool:
        job = self.get(job_id)
        if job is None or job.status != "pending":
            return False
        with self._unavailable():
            return bool(self._change(keys=[f"job:{job_id}"], args=[change(job).dumps(), self.ttl]))

    def since(self) -> float | None:
        with self._unavailable():
            raw = self._redis.get(_EPOCH)
        return float(raw) if raw else None

    def put_blob(self, key: str, data: bytes) -> None:
        with self._unavailable():
            self._redis.set(f"blob:{key}", data, ex=self.ttl)

    def get_blob(self, key: str) -> bytes | None:
        with self._unavailable():
            raw = self._redis.get(f"blob:{key}")
        return bytes(raw) if raw else None  # type: ignore[arg-type]

    def ping(self) -> str:
        try:
            with self._unavailable():
                self._redis.ping()
        except StoreUnavailable as e:
            return e.short
        return "ok"

    def close(self) -> None:
        self._redis.close()


def open_store(url: str, ttl: float) -> JobStore:
    """``sqlite:///abs/path.sqlite3[?timeout=seconds]`` (how long a locked file is waited
    for) or ``redis://host:port/db[?socket_timeout=seconds]`` (``rediss://`` for TLS)."""
    if url.startswith("sqlite:///"):
        parts = urlsplit(url)
        timeout = parse_qs(parts.query).get("timeout", ["5"])[-1]
        return SqliteJobStore(Path(parts.path), ttl, float(timeout))
    if url.startswith(("redis://", "rediss://")):
        return RedisJobStore(url, ttl)
    raise ValueError(f"job store URL must start with sqlite:/// or redis://, not {url!r}")
