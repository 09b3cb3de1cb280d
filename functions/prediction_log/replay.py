"""Replay the prediction log's dead letters into the log store, by hand.

    python -m functions.prediction_log.replay [--rejected]

The dead-letter Service replays on its own (``DEAD_LETTER_REPLAY``, on by default). This is
for when that is off, or its pod is gone and its volume is not, or after fixing what got
events rejected: ``--rejected`` queues ``rejected.jsonl`` again first. It reads the
Service's own settings (``LOG_STORE_URL``, ``DEAD_LETTER_DIR``), and takes the spool's sender
lock: while a live dead-letter Service holds it, it says so and changes nothing. Exit status:
0 when the spool is empty at the end, 1 when some dead letters still wait (the store is
away, or the Service holds the spool), 2 for bad settings.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from functions.core import outbox
from functions.core.settings import SettingsError, build_settings
from functions.prediction_log.dead_letters import Replay
from functions.prediction_log.settings import PredictionLogSettings
from functions.prediction_log.store import open_log_store


def requeue_rejected(directory: Path) -> int:
    """Put the rejected dead letters back in the queue (a spool no writer holds: the replay
    drains it, then removes it); how many there were."""
    rejected = directory / outbox.REJECTED_FILE
    if not rejected.is_file():
        return 0
    count = rejected.read_bytes().count(b"\n")
    rejected.rename(directory / f"spool-requeued-{uuid.uuid4().hex[:8]}.jsonl")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rejected", action="store_true", help="queue the rejected dead letters again first"
    )
    args = parser.parse_args(argv)
    try:
        settings = build_settings(PredictionLogSettings)
    except SettingsError as e:
        sys.stderr.write(f"{e}\n")
        return 2
    directory = settings.dead_letter_dir
    if args.rejected and (requeued := requeue_rejected(directory)):
        sys.stdout.write(f"queued {requeued} rejected dead letter(s) again\n")
    store = open_log_store(settings.log_store_url.get_secret_value())
    replay = Replay(store)
    try:
        done = outbox.Sender(directory, replay).drain_once()
    finally:
        store.close()
    if done is None:
        sys.stdout.write(
            f"{directory}: a running dead-letter Service holds the spool and replays it\n"
        )
        return 1
    counts = ", ".join(f"{n} {what}" for what, n in sorted(replay.counts.items())) or "nothing"
    left = outbox.spooled_events(directory)
    sys.stdout.write(f"{directory}: replayed {counts}; {left} waiting\n")
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
