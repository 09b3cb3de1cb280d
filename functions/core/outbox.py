"""A durable local outbox: events are appended to a spool file on the request path and sent
to the sink by a background thread, so emission never slows or breaks a prediction.

Each process appends JSON lines (one CloudEvent each, structured mode) to its own spool file,
which it holds under an exclusive ``flock`` for as long as it lives. Appending is one
``write(2)``: the bytes are in the kernel once it returns, so a process killed right after
answering loses nothing. The sender reads complete lines past a checkpoint, posts each
event, and advances the checkpoint only after the sink accepted it (at-least-once; the log
sink is idempotent on the event id). While the sink is down, events wait on disk and are
re-sent with backoff. A spool whose owner died (its lock is free) is adopted and drained by
the next process that starts. Past ``max_bytes`` on disk new events are dropped, counted and
logged. Counters: emitted, delivered, spooled (waiting now), dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from prometheus_client import Counter, Gauge

logger = logging.getLogger(__name__)

EMITTED = Counter("mlf_events_emitted_total", "Events written to the outbox", ["type"])
DELIVERED = Counter("mlf_events_delivered_total", "Events the sink accepted", ["type"])
DROPPED = Counter(
    "mlf_events_dropped_total", "Events dropped: outbox over its disk bound", ["type"]
)
SPOOLED = Gauge("mlf_events_spooled", "Events waiting in the outbox", multiprocess_mode="livesum")

Send = Callable[[dict[str, object]], None]  # raises on failure; the event is retried later


class Spool:
    """One locked spool file and its checkpoint (the byte offset sent so far)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self.checkpoint = path.with_suffix(".offset")

    @classmethod
    def claim(cls, path: Path) -> Spool | None:
        """Lock ``path`` (creating it); None if a live process holds it."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(path, fd)

    def offset(self) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self.checkpoint.read_text())
        return 0

    def commit(self, offset: int) -> None:
        tmp = self.checkpoint.with_suffix(".tmp")
        tmp.write_text(str(offset))
        tmp.replace(self.checkpoint)  # atomic: a crash leaves the old or the new offset

    def pending(self) -> tuple[list[bytes], int]:
        """Complete lines after the checkpoint, and the offset just past them."""
        start = self.offset()
        with self.path.open("rb") as f:
            f.seek(start)
            data = f.read(1 << 20)
        end = data.rfind(b"\n") + 1  # a torn last line (killed mid-write) waits
        return data[:end].splitlines(), start + end

    def remove(self) -> None:
        for path in (self.path, self.checkpoint):
            path.unlink(missing_ok=True)
        os.close(self.fd)


class Outbox:
    def __init__(self, directory: Path, send: Send, max_bytes: int, poll: float = 0.2) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self._send, self.max_bytes, self._poll = directory, send, max_bytes, poll
        own = Spool.claim(directory / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl")
        assert own is not None
        self._own = own
        self._lock = threading.Lock()
        self._size = sum(p.stat().st_size for p in directory.glob("spool-*.jsonl"))
        self._waiting = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def emit(self, event: dict[str, object]) -> bool:
        """Append one structured-mode CloudEvent; False (counted, logged) when over the bound."""
        line = orjson.dumps(event) + b"\n"
        kind = str(event.get("type", ""))
        with self._lock:
            if self._size + len(line) > self.max_bytes:
                DROPPED.labels(kind).inc()
                logger.warning(
                    "outbox over %d bytes: event %s dropped", self.max_bytes, event.get("id")
                )
                return False
            os.write(self._own.fd, line)
            self._size += len(line)
            self._waiting += 1
        EMITTED.labels(kind).inc()
        SPOOLED.inc()
        return True

    def flush(self, seconds: float) -> bool:
        """Send what is spooled now (graceful shutdown); True when nothing is left."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._drain(self._own) and self._waiting == 0:
                return True
            time.sleep(self._poll)
        return False

    def stop(self, seconds: float = 5.0) -> None:
        self._stop.set()
        self.flush(seconds)

    def _run(self) -> None:
        delay = self._poll
        while not self._stop.wait(delay):
            ok = all(self._drain(spool) for spool in self._spools())
            delay = self._poll if ok else min(delay * 2, 10.0)  # sink down: back off

    def _spools(self) -> list[Spool]:
        """Our own spool, then any a dead process left behind (adopted, drained, removed)."""
        found = [self._own]
        for path in sorted(self.directory.glob("spool-*.jsonl")):
            if path != self._own.path and (orphan := Spool.claim(path)) is not None:
                logger.info("adopting %s left by a process that died", path.name)
                found.append(orphan)
        return found

    def _drain(self, spool: Spool) -> bool:
        """Send everything complete in ``spool``; False when the sink refused."""
        while True:
            lines, end = spool.pending()
            if not lines:
                if spool is not self._own:
                    with self._lock:
                        self._size -= spool.path.stat().st_size
                    spool.remove()
                return True
            sent = spool.offset()
            for line in lines:
                event = orjson.loads(line)
                try:
                    self._send(event)
                except Exception as e:  # the sink is down or refused: keep it on disk
                    logger.warning("sink refused event %s (%s); will retry", event.get("id"), e)
                    spool.commit(sent)
                    return False
                sent += len(line) + 1
                DELIVERED.labels(str(event.get("type", ""))).inc()
                if spool is self._own:
                    with self._lock:
                        self._waiting -= 1
                    SPOOLED.dec()
            spool.commit(end)
            if spool is self._own:
                self._maybe_rotate(end)

    def _maybe_rotate(self, sent: int) -> None:
        """Start a fresh spool once everything in a big one is sent, to bound the disk."""
        if sent < 8 << 20 or sent != self._own.path.stat().st_size:
            return
        with self._lock:
            if self._waiting:
                return
            old = self._own
            self._own = Spool.claim(
                self.directory / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            )  # type: ignore[assignment]
            self._size -= sent
        old.remove()
