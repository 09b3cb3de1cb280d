"""The prediction log's dead letters: what the broker could not hand to the ingest within the
Trigger's retries (eventing/prediction-log.yaml) lands here, on disk, and goes back into the
log store from here, with no hand replay needed.

``POST /`` of the cluster-local ``prediction-log-dead-letter`` Service (the Trigger's
``deadLetterSink``) appends each event, with the ``knativeerror*`` extensions the broker added,
to a spool (``core.outbox``'s writer, fsync'd; a PersistentVolume in the cluster) and answers
202 only once it is there. A replayer drains the spool into the log store, with the ingest's
own store write (``ingest.store_event``, idempotent on source and id: a record the ingest
stored late is not stored twice), backing off with jitter while the store is away. An event
that can never be a record (another type, data that is no prediction log) is set aside in
``rejected.jsonl``, kept and counted. ``python -m functions.prediction_log.replay`` runs the
same replay by hand (docs/prediction-log.md).
"""

from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path

import orjson
from flask import Request, Response
from prometheus_client import Counter, Gauge

from functions.core import events, outbox, transport
from functions.core.errors import FunctionError, ServiceUnavailable
from functions.core.http import read_limited
from functions.prediction_log.ingest import store_event
from functions.prediction_log.store import LogStore

logger = logging.getLogger(__name__)

RECEIVED = Counter(
    "mlf_dead_letters_received_total", "Dead-lettered events spooled to disk", ["type"]
)
REPLAYED = Counter(
    "mlf_dead_letters_replayed_total", "Dead letters the log store took (new or not)", ["type"]
)
STORED = Counter(
    "mlf_dead_letters_stored_total", "Dead letters that were new records in the log store"
)
REJECTED = Counter(
    "mlf_dead_letters_rejected_total", "Dead letters that are no log record, kept aside", ["type"]
)
PENDING = Gauge(
    "mlf_dead_letters_pending", "Dead letters waiting for the store", multiprocess_mode="livesum"
)


class Replay:
    """Stores one spooled dead letter (``outbox.Send``), and tallies what became of each."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, line: bytes) -> None:
        try:
            event = events.from_structured(orjson.loads(line))
            stored = store_event(self.store, event)
        except FunctionError as e:  # no prediction log: never a record
            self.counts["rejected"] += 1
            raise transport.Refused(e.detail) from e
        except (ValueError, KeyError) as e:  # not JSON, or not an event (a hand-edited spool)
            self.counts["rejected"] += 1
            raise transport.Refused(f"not a CloudEvent: {e}") from e
        self.counts["stored" if stored else "stored already"] += 1
        if stored:
            STORED.inc()


def replayer(directory: Path, store: LogStore, poll: float = 1.0) -> outbox.Sender:
    """The sender that drains a dead-letter spool into ``store`` (the lock holder alone)."""
    return outbox.Sender(
        directory, Replay(store), poll=poll, max_delay=30.0, metrics=(REPLAYED, REJECTED, PENDING)
    )


class DeadLetters:
    """The dead-letter Service's route and its replayer (started once, in every worker: the
    holder of the spool's sender lock replays, the others wait to take over)."""

    def __init__(
        self, directory: Path, store: LogStore, max_body_bytes: int, *, replay: bool
    ) -> None:
        self.directory, self.max_body_bytes = directory, max_body_bytes
        self.spool = outbox.Writer(directory, 1 << 30, sync=True)
        self.replayer = replayer(directory, store)
        self._thread: threading.Thread | None = self.replayer.start() if replay else None

    def receive(self, request: Request, rid: str) -> Response:
        event = transport.receive(dict(request.headers), read_limited(request, self.max_body_bytes))
        kind = str(event["type"])
        if not self.spool.append(events.to_structured(event), kind):
            raise ServiceUnavailable("the dead-letter spool is full", headers={"Retry-After": "60"})
        RECEIVED.labels(kind).inc()
        logger.warning(
            "dead letter %s from %s: the ingest answered %s",
            event["id"], event["source"], event.get("knativeerrorcode", "?"),
        )  # fmt: skip
        return Response(status=202)

    def close(self) -> None:
        self.replayer.stop()
        if self._thread is not None:
            self._thread.join(10)
