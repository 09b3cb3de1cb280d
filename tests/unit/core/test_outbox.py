"""The durable outbox, with real spool files and a fake sink (a ``Send`` that records or
refuses, as a sink that is up or down would)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from functions.core.outbox import REJECTED_FILE, Sender, Writer, _event_type
from functions.core.settings import REPO_ROOT
from functions.core.transport import Refused
from tests.helpers import poll_until


class Sink:
    """Takes every event while up, but refuses for good those whose data says ``poison``."""

    def __init__(self) -> None:
        self.up = True
        self.received: list[dict[str, object]] = []

    def __call__(self, line: bytes) -> None:
        if not self.up:
            raise ConnectionError("sink is down")
        received = orjson.loads(line)
        if received.get("data") == "poison":
            raise Refused("not a valid event for this sink")
        self.received.append(received)


def event(i: int) -> dict[str, object]:
    return {"specversion": "1.0", "id": f"e-{i}", "source": "/t", "type": "t.v1", "data": {"i": i}}


def settle(check: Callable[[], bool], seconds: float = 10) -> None:
    poll_until(check, seconds, "the outbox did not settle", every=0.02)


@pytest.fixture
def sender(tmp_path: Path) -> Iterator[tuple[Sender, Sink]]:
    sink = Sink()
    running = Sender(tmp_path, sink, poll=0.01)
    thread = running.start()
    yield running, sink
    running.stop()
    thread.join(5)


def test_events_are_sent_in_order_once(tmp_path: Path, sender: tuple[Sender, Sink]) -> None:
    _, sink = sender
    writer = Writer(tmp_path, max_bytes=1 << 20)
    for i in range(50):
        assert writer.emit(event(i))
    settle(lambda: len(sink.received) == 50)
    time.sleep(0.1)
    assert [e["id"] for e in sink.received] == [f"e-{i}" for i in range(50)]


def test_events_wait_while_the_sink_is_down_and_are_resent(
    tmp_path: Path, sender: tuple[Sender, Sink]
) -> None:
    _, sink = sender
    sink.up = False
    writer = Writer(tmp_path, max_bytes=1 << 20)
    for i in range(20):
        writer.emit(event(i))
    time.sleep(0.2)
    assert sink.received == []
    sink.up = True
    settle(lambda: len(sink.received) == 20, 30)
    assert len({e["id"] for e in sink.received}) == 20  # each once: the checkpoint held


def test_an_event_refused_for_good_is_set_aside_and_the_rest_go_on(
    tmp_path: Path, sender: tuple[Sender, Sink]
) -> None:
    _, sink = sender
    writer = Writer(tmp_path, max_bytes=1 << 20)
    for i in range(10):
        writer.emit(event(i) | ({"data": "poison"} if i in (3, 7) else {}))
    settle(lambda: len(sink.received) == 8)
    assert [e["id"] for e in sink.received] == [f"e-{i}" for i in range(10) if i not in (3, 7)]
    kept = [orjson.loads(line) for line in (tmp_path / REJECTED_FILE).read_bytes().splitlines()]
    assert [e["id"] for e in kept] == ["e-3", "e-7"]  # kept whole, for a look or a replay


def test_the_backoff_while_the_sink_is_down_is_jittered(tmp_path: Path) -> None:
    """Two senders whose sinks are down retry at their own paces, not in step."""
    attempts: list[list[float]] = [[], []]

    def down(times: list[float]) -> Callable[[bytes], None]:
        def send(line: bytes) -> None:
            times.append(time.monotonic())
            raise ConnectionError("down")

        return send

    senders = []
    for i, times in enumerate(attempts):
        Writer(tmp_path / str(i), max_bytes=1 << 20).emit(event(i))
        senders.append(Sender(tmp_path / str(i), down(times), poll=0.01, max_delay=0.16))
    threads = [s.start() for s in senders]
    time.sleep(1.5)
    for s, thread in zip(senders, threads, strict=True):
        s.stop()
        thread.join(5)
    # From the 4th, the backoff is at its bound; the last attempt is the stop's own drain.
    gaps = [[b - a for a, b in zip(t, t[1:], strict=False)][3:-1] for t in attempts]
    assert all(0.06 < gap < 0.2 for gap in gaps[0] + gaps[1])  # in [max/2, max], plus slack
    assert len(set(round(g, 3) for g in gaps[0] + gaps[1])) > 4  # not one fixed interval


def test_over_the_disk_bound_new_events_are_dropped(tmp_path: Path) -> None:
    writer = Writer(tmp_path, max_bytes=1000)
    results = [writer.emit(event(i)) for i in range(40)]
    assert results[0] is True
    assert results[-1] is False
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("spool-*.jsonl"))
    line = len(orjson.dumps(event(10))) + 1
    assert 1000 - line < on_disk <= 1000


def test_a_spool_left_by_a_killed_process_is_sent_and_removed(tmp_path: Path) -> None:
    script = (
        "import os, sys, signal\n"
        "from pathlib import Path\n"
        "from functions.core.outbox import Writer\n"
        "box = Writer(Path(sys.argv[1]), 1 << 20)\n"
        "for i in range(30):\n"
        "    box.emit({'id': f'k-{i}', 'type': 't.v1', 'data': {}})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT, check=False)
    assert done.returncode == -9
    assert len(list(tmp_path.glob("spool-*.jsonl"))) == 1
    sink = Sink()
    assert Sender(tmp_path, sink).drain()
    assert len(sink.received) == 30
    assert list(tmp_path.glob("spool-*.jsonl")) == []  # its writer is gone: removed


def test_a_live_writers_spool_is_kept(tmp_path: Path) -> None:
    writer = Writer(tmp_path, max_bytes=1 << 20)
    writer.emit(event(1))
    sink = Sink()
    assert Sender(tmp_path, sink).drain()
    assert len(sink.received) == 1
    assert len(list(tmp_path.glob("spool-*.jsonl"))) == 1  # still being written
    writer.emit(event(2))
    Sender(tmp_path, sink).drain()
    assert [e["id"] for e in sink.received] == ["e-1", "e-2"]


def test_only_one_sender_sends(tmp_path: Path, sender: tuple[Sender, Sink]) -> None:
    _, first = sender
    writer = Writer(tmp_path, max_bytes=1 << 20)
    writer.emit(event(0))
    settle(lambda: len(first.received) == 1)  # the first sender holds the directory now
    second_sink = Sink()
    second = Sender(tmp_path, second_sink, poll=0.01)
    thread = second.start()
    for i in range(1, 10):
        writer.emit(event(i))
    settle(lambda: len(first.received) == 10)
    assert second_sink.received == []
    second.stop()
    thread.join(5)


def test_a_torn_last_line_waits_for_its_end(tmp_path: Path) -> None:
    writer = Writer(tmp_path, max_bytes=1 << 20)
    writer.emit(event(1))
    spool = next(tmp_path.glob("spool-*.jsonl"))
    with spool.open("ab") as f:
        f.write(b'{"id": "torn"')  # a writer killed mid-line
    sink = Sink()
    Sender(tmp_path, sink).drain()
    assert [e["id"] for e in sink.received] == ["e-1"]


def test_the_event_type_is_read_without_parsing_the_line() -> None:
    nested = {"specversion": "1.0", "type": "t.v1", "data": {"type": "inner"}}
    assert _event_type(orjson.dumps(nested)) == "t.v1"
    assert _event_type(orjson.dumps({"data": {}, "type": "late.v1"})) == "late.v1"
    assert _event_type(b"not json") == ""
