"""The job store of asynchronous work: a job is ``pending`` until it ends ``done`` or ``failed``.

One small interface, two backends behind one URL setting: ``sqlite:///path`` (embedded, the
default; processes on one machine share the file in WAL mode) and ``redis://host:port/db``
(the cluster: every pod of the proxy and the worker shares it). A job ends once: the first
``finish`` wins, so a redelivered event or a late dead letter changes nothing. Jobs and
their input blobs expire ``ttl`` seconds after they were written (Redis ``EXPIRE``; SQLite
filters on read and deletes on write). A pending job past its deadline reads as failed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

Status = Literal["pending", "done", "failed"]
TIMED_OUT = "timed out"


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

    def seen_at(self, now: float) -> Job:
        """The job as a reader sees it at ``now``: a pending job past its deadline has failed."""
        if self.status == "pending" and now > self.deadline:
            return replace(self, status="failed", reason=TIMED_OUT)
        return self

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes | str) -> Job:
        return cls(**orjson.loads(raw))


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

    def put_blob(self, key: str, data: bytes) -> None: ...

    def get_blob(self, key: str) -> bytes | None: ...

    def ping(self) -> str:
        """``ok`` or the reason the store cannot be used."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, expires REAL NOT NULL, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, expires REAL NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires);
CREATE INDEX IF NOT EXISTS blobs_expires ON blobs (expires);
"""


class SqliteJobStore:
    """Embedded: one file, any number of processes on this machine (WAL, busy timeout)."""

    def __init__(self, path: Path, ttl: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def create(self, job: Job) -> bool:
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE expires <= ?", (now,))
            self._db.execute("DELETE FROM blobs WHERE expires <= ?", (now,))
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO jobs VALUES (?, ?, ?)",
                (job.job_id, now + self.ttl, job.dumps()),
            )
        return cursor.rowcount == 1

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(
                "SELECT doc FROM jobs WHERE job_id = ? AND expires > ?", (job_id, time.time())
            ).fetchone()
        return Job.loads(row[0]) if row else None

    def finish(self, job_id: str, status: Status, event_id: str, **values: Any) -> bool:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # read and write as one step across processes
            try:
                row = self._db.execute(
                    "SELECT doc FROM jobs WHERE job_id = ? AND expires > ?", (job_id, time.time())
                ).fetchone()
                job = Job.loads(row[0]) if row else None
                if job is None or job.status != "pending":
                    return False
                ended = replace(job, status=status, event_id=event_id, **values)
                self._db.execute(
                    "UPDATE jobs SET doc = ?, expires = ? WHERE job_id = ?",
                    (ended.dumps(), time.time() + self.ttl, job_id),
                )
                return True
            finally:
                self._db.execute("COMMIT")

    def put_blob(self, key: str, data: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)", (key, time.time() + self.ttl, data)
            )

    def get_blob(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM blobs WHERE key = ? AND expires > ?", (key, time.time())
            ).fetchone()
        return bytes(row[0]) if row else None

    def ping(self) -> str:
        try:
            with self._lock:
                self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error as e:
            return f"sqlite: {e}"
        return "ok"

    def close(self) -> None:
        self._db.close()


# Ends a pending job atomically on the server: KEYS[1] job key; ARGV: new doc, ttl seconds.
_FINISH = """
local doc = redis.call('GET', KEYS[1])
if not doc or cjson.decode(doc)['status'] ~= 'pending' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class RedisJobStore:
    """The cluster backend: ``SET NX EX`` creates, a server-side script ends a job once."""

    def __init__(self, url: str, ttl: float) -> None:
        import redis

        self.ttl = max(1, int(ttl))
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._finish = self._redis.register_script(_FINISH)

    def create(self, job: Job) -> bool:
        return bool(self._redis.set(f"job:{job.job_id}", job.dumps(), nx=True, ex=self.ttl))

    def get(self, job_id: str) -> Job | None:
        raw = self._redis.get(f"job:{job_id}")
        return Job.loads(raw) if raw else None

    def finish(self, job_id: str, status: Status, event_id: str, **values: Any) -> bool:
        job = self.get(job_id)
        if job is None or job.status != "pending":
            return False
        ended = replace(job, status=status, event_id=event_id, **values)
        return bool(self._finish(keys=[f"job:{job_id}"], args=[ended.dumps(), self.ttl]))

    def put_blob(self, key: str, data: bytes) -> None:
        self._redis.set(f"blob:{key}", data, ex=self.ttl)

    def get_blob(self, key: str) -> bytes | None:
        raw = self._redis.get(f"blob:{key}")
        return bytes(raw) if raw else None  # type: ignore[arg-type]

    def ping(self) -> str:
        import redis

        try:
            self._redis.ping()
        except redis.RedisError as e:
            return f"redis: {e}"
        return "ok"

    def close(self) -> None:
        self._redis.close()


def open_store(url: str, ttl: float) -> JobStore:
    """``sqlite:///abs/path.sqlite3`` or ``redis://host:port/db`` (``rediss://`` for TLS)."""
    if url.startswith("sqlite:///"):
        return SqliteJobStore(Path(url.removeprefix("sqlite://")), ttl)
    if url.startswith(("redis://", "rediss://")):
        return RedisJobStore(url, ttl)
    raise ValueError(f"job store URL must start with sqlite:/// or redis://, not {url!r}")
