"""A durable local outbox: events are appended to a spool file on the request path and sent
to the sink by a separate sender, so emission never slows or breaks a prediction.

Writers (every worker process) append JSON lines — one structured-mode CloudEvent each — to
a spool file of their own, held under an exclusive ``flock`` while they live. Appending is
one ``write(2)``: the bytes are in the kernel once it returns, so a worker killed right
after answering loses nothing. One sender per outbox directory (it holds ``.sender.lock``;
under ``core.serve`` it is a process of its own, so sending never competes with requests for
the GIL; under a dev server it is a thread) reads complete lines past each spool's
checkpoint, hands each event to the sink (``core.transport``), and advances the checkpoint
only once the sink accepted it (at-least-once; the log sink is idempotent on source and id).
While the sink is down events wait on disk and are re-sent with a jittered backoff, so that
the outboxes of many pods do not retry in step. An event the sink refuses for good (a 4xx no
retry changes) is set aside in ``rejected.jsonl``, kept and counted, and the rest go on. A
spool fully sent whose writer is gone (its lock is free: it rotated, exited or was killed) is
removed. Past ``max_bytes`` on disk new events are dropped, counted and logged.

Counters: emitted, handed over (the sink took it: for K_SINK that is the broker, which has
yet to deliver it, so handed over is not stored), rejected, dropped; gauge: spooled (set by
the sender, so that emitting stays one write and one counter increment).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from functions.core.settings import EventSettings, build_settings
from functions.core.transport import Refused, sink_for

# Its own generator: the jitter must not draw from (or move) the global random state.
_JITTER = random.Random()
logger = logging.getLogger(__name__)

EMITTED = Counter("mlf_events_emitted_total", "Events written to the outbox", ["type"])
HANDED_OVER = Counter(
    "mlf_events_handed_over_total",
    "Events the sink (the broker, or Pub/Sub) took: handed over for delivery, not yet stored",
    ["type"],
)
REJECTED = Counter(
    "mlf_events_rejected_total",
    "Events the sink refused for good, kept in rejected.jsonl",
    ["type"],
)
DROPPED = Counter(
    "mlf_events_dropped_total", "Events dropped: outbox over its disk bound", ["type"]
)
SPOOLED = Gauge("mlf_events_spooled", "Events waiting in the outbox", multiprocess_mode="livesum")
ROTATE_BYTES = 8 << 20


# An event type's counter series, looked up once (a labels() lookup costs ~2 us per event).
@functools.cache
def _emitted(kind: str) -> Any:
    return EMITTED.labels(kind)


# Delivers one structured-mode event (a JSON line); raises when the sink did not take it:
# ``Refused`` when it never will (``core.transport``'s ``Sink.send``).
Send = Callable[[bytes], None]
REJECTED_FILE = "rejected.jsonl"


def _lock(path: Path, *, create: bool) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None when someone alive holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Writer:
    """Appends events to this process's spool file (rotating it past ``ROTATE_BYTES``)."""

    def __init__(self, directory: Path, max_bytes: int, *, sync: bool = False) -> None:
        """``sync``: fsync each event, so that it survives the machine too, not only the
        process (for rare, precious events: dead letters)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.max_bytes, self.sync = directory, max_bytes, sync
        self._lock = threading.Lock()
        self._fd, self._written = self._open(), 0
        self._total, self._checked = _spooled_bytes(directory), time.monotonic()
        self._dropped, self._warned = 0, 0.0

    def _open(self) -> int:
        """A new spool, locked before the sender can see it: made and locked under a name the
        sender does not read, then renamed (the lock stays with the open file). Created under
        its own name, a sender polling in between found it empty and unlocked, took it for a
        dead writer's and locked or removed it under the writer."""
        name = f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        making = self.directory / f".{name}.new"
        fd = _lock(making, create=True)
        assert fd is not None, f"{making} is locked by another process"
        making.rename(self.directory / name)
        return fd

    def emit(self, event: dict[str, object]) -> bool:
        """Append one event; False (counted and logged) when the outbox is over its bound."""
        return self.append(orjson.dumps(event), str(event.get("type", "")))

    def append(self, event: bytes, kind: str) -> bool:
        """``emit`` for an event already in structured-mode JSON text (``kind``: its type)."""
        line = event + b"\n"
        with self._lock:
            if time.monotonic() - self._checked > 1.0:  # the sender shrinks it: look again
                self._total, self._checked = _spooled_bytes(self.directory), time.monotonic()
            if self._total + len(line) > self.max_bytes:
                DROPPED.labels(kind).inc()
                self._dropped += 1
                if time.monotonic() - self._warned > 10.0:  # a line per event would flood
                    logger.warning(
                        "outbox over %d bytes: %d event(s) dropped", self.max_bytes, self._dropped
                    )
                    self._dropped, self._warned = 0, time.monotonic()
                return False
            os.write(self._fd, line)
            if self.sync:
                os.fsync(self._fd)
            self._written += len(line)
            self._total += len(line)
            if self._written > ROTATE_BYTES:
                os.close(self._fd)  # releases the lock: the sender removes it once sent
                self._fd, self._written = self._open(), 0
        _emitted(kind).inc()
        return True


class Sender:
    """Drains every spool of a directory; only the holder of ``.sender.lock`` sends."""

    def __init__(
        self,
        directory: Path,
        send: Send,
        poll: float = 0.2,
        max_delay: float = 10.0,
        metrics: tuple[Counter, Counter, Gauge] = (HANDED_OVER, REJECTED, SPOOLED),
    ) -> None:
        """``metrics``: what counts the events the sink took and those it refused (by type),
        and what tells how many wait."""
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self._send, self._poll, self._max_delay = directory, send, poll, max_delay
        # A series looked up once per event type (a labels() lookup costs ~2 us per event).
        self._taken = functools.cache(metrics[0].labels)
        self._refused, self._waiting = metrics[1], metrics[2]
        self._stop = threading.Event()

    def run(self) -> None:
        """Send until ``stop()``; wait while another live sender holds the directory."""
        lock = None
        while lock is None and not self._stop.is_set():
            lock = _lock(self.directory / ".sender.lock", create=True)
            if lock is None:
                self._stop.wait(1.0)
        delay = self._poll
        while not self._stop.is_set():
            if self.drain():
                delay = self._poll
                self._stop.wait(delay)
                continue
            # The sink is down: back off, each sender at its own pace (equal jitter), so that
            # every pod's outbox does not come back at the same instant.
            delay = min(delay * 2, self._max_delay)
            self._stop.wait(_JITTER.uniform(delay / 2, delay))
        self.drain()  # graceful shutdown: what is spooled now goes out
        if lock is not None:
            os.close(lock)

    def drain_once(self) -> bool | None:
        """One drain under the directory's lock, for a command run by hand: None when a live
        sender holds it (it drains on its own), else as ``drain``."""
        lock = _lock(self.directory / ".sender.lock", create=True)
        if lock is None:
            return None
        try:
            return self.drain()
        finally:
            os.close(lock)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="outbox-sender", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def drain(self) -> bool:
        """Send everything complete in every spool; False when the sink refused something."""
        sent = all(self._drain(path) for path in sorted(self.directory.glob("spool-*.jsonl")))
        self._waiting.set(spooled_events(self.directory))
        return sent

    def _drain(self, path: Path) -> bool:
        checkpoint = path.with_suffix(".offset")
        offset = _read_offset(checkpoint)
        while True:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read(1 << 20)
            end = data.rfind(b"\n") + 1  # a torn last line (a writer killed mid-write) waits
            if not end:
                break
            for line in data[:end].splitlines():
                try:
                    self._send(line)
                    self._taken(_event_type(line)).inc()
                except Refused as e:  # never takes it: set it aside, the rest go on
                    logger.warning("sink refused an event for good (%s): in %s", e, REJECTED_FILE)
                    self._set_aside(line)
                except Exception as e:  # the sink is down or failing: keep it on disk
                    logger.warning("sink did not take an event (%s); will retry", e)
                    _write_offset(checkpoint, offset)
                    return False
                offset += len(line) + 1
            _write_offset(checkpoint, offset)
        if offset == path.stat().st_size and (fd := _lock(path, create=False)) is not None:
            for done in (path, checkpoint):  # fully sent and its writer is gone
                done.unlink(missing_ok=True)
            os.close(fd)
        return True

    def _set_aside(self, line: bytes) -> None:
        with (self.directory / REJECTED_FILE).open("ab") as f:  # the lock holder alone writes
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self._refused.labels(_event_type(line)).inc()


_TYPE = re.compile(rb'"type":"([^"\\]*)"')  # as Writer.emit's orjson writes it


def _event_type(line: bytes) -> str:
    if found := _TYPE.search(line):  # the attribute precedes "data" (a match in data is later)
        return found[1].decode()
    with contextlib.suppress(ValueError):
        return str(orjson.loads(line).get("type", ""))
    return ""


def _read_offset(checkpoint: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(checkpoint.read_text())
    return 0


def _write_offset(checkpoint: Path, offset: int) -> None:
    tmp = checkpoint.with_suffix(".tmp")
    tmp.write_text(str(offset))
    tmp.replace(checkpoint)  # atomic: a crash leaves the old or the new offset


def spooled_events(directory: Path) -> int:
    """Complete lines not sent yet, in every spool."""
    total = 0
    for path in directory.glob("spool-*.jsonl"):
        with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
            f.seek(_read_offset(path.with_suffix(".offset")))
            while chunk := f.read(1 << 20):
                total += chunk.count(b"\n")
    return total


def _spooled_bytes(directory: Path) -> int:
    total = 0
    for path in directory.glob("spool-*.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size - _read_offset(path.with_suffix(".offset"))
    return total


def main() -> None:
    """The sender as a process of its own (``python -m functions.core.outbox``), configured by
    the same environment as the Service's workers (outbox directory, K_SINK or Pub/Sub).

    It stops when its standard input closes — its parent closed it after the workers had
    finished, or died — never on a signal: a SIGTERM sent to the whole process group must not
    stop it before the workers have written their last events."""
    import signal
    import sys

    settings = build_settings(EventSettings)
    sender = Sender(settings.outbox_path(), sink_for(settings).send)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # returns at EOF
        sender.stop()

    threading.Thread(target=watch_parent, daemon=True).start()
    sender.run()


if __name__ == "__main__":
    main()
