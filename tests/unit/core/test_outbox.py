"""The durable outbox, with a real spool directory and a fake sink (a ``Send`` that records or
refuses, the way a sink that is up or down would)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from functions.core.outbox import Outbox
from functions.core.settings import REPO_ROOT


class Sink:
    def __init__(self) -> None:
        self.up = True
        self.received: list[dict[str, object]] = []

    def __call__(self, event: dict[str, object]) -> None:
        if not self.up:
            raise ConnectionError("sink is down")
        self.received.append(event)


def event(i: int) -> dict[str, object]:
    return {"specversion": "1.0", "id": f"e-{i}", "source": "/t", "type": "t.v1", "data": {"i": i}}


def settle(check: object, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the outbox did not settle"
        time.sleep(0.02)


def test_events_are_sent_in_order_and_checkpointed(tmp_path: Path) -> None:
    sink = Sink()
    outbox = Outbox(tmp_path, sink, max_bytes=1 << 20, poll=0.01)
    outbox.start()
    for i in range(50):
        assert outbox.emit(event(i))
    settle(lambda: len(sink.received) == 50)
    assert [e["id"] for e in sink.received] == [f"e-{i}" for i in range(50)]
    outbox.stop()


def test_events_wait_while_the_sink_is_down_and_are_resent(tmp_path: Path) -> None:
    sink = Sink()
    sink.up = False
    outbox = Outbox(tmp_path, sink, max_bytes=1 << 20, poll=0.01)
    outbox.start()
    for i in range(20):
        outbox.emit(event(i))
    time.sleep(0.2)
    assert sink.received == []
    sink.up = True
    settle(lambda: len(sink.received) == 20)
    assert len({e["id"] for e in sink.received}) == 20  # each once: the checkpoint held
    outbox.stop()


def test_over_the_disk_bound_new_events_are_dropped(tmp_path: Path) -> None:
    sink = Sink()
    sink.up = False
    outbox = Outbox(tmp_path, sink, max_bytes=1000, poll=0.01)
    results = [outbox.emit(event(i)) for i in range(40)]
    assert results[0] is True
    assert results[-1] is False
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("spool-*.jsonl"))
    line = len(b'{"specversion":"1.0","id":"e-10","source":"/t","type":"t.v1","data":{"i":10}}\n')
    assert 1000 - line < on_disk <= 1000


def test_a_spool_left_by_a_killed_process_is_adopted_and_drained(tmp_path: Path) -> None:
    # A real process appends events then dies by SIGKILL before sending any.
    script = (
        "import os, sys, signal\n"
        "from pathlib import Path\n"
        "from functions.core.outbox import Outbox\n"
        "box = Outbox(Path(sys.argv[1]), lambda e: None, 1 << 20)\n"
        "for i in range(30):\n"
        "    box.emit({'id': f'k-{i}', 'type': 't.v1', 'data': {}})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT, check=False)
    assert done.returncode == -9
    assert len(list(tmp_path.glob("spool-*.jsonl"))) == 1
    sink = Sink()
    outbox = Outbox(tmp_path, sink, max_bytes=1 << 20, poll=0.01)
    outbox.start()
    settle(lambda: len(sink.received) == 30)
    settle(lambda: len(list(tmp_path.glob("spool-*.jsonl"))) == 1)  # the orphan is removed
    outbox.stop()


def test_a_live_processs_spool_is_not_adopted(tmp_path: Path) -> None:
    first = Outbox(tmp_path, Sink(), max_bytes=1 << 20)  # not started: it keeps its events
    first.emit(event(1))
    sink = Sink()
    second = Outbox(tmp_path, sink, max_bytes=1 << 20, poll=0.01)
    second.start()
    time.sleep(0.2)
    assert sink.received == []
    second.stop()


@pytest.mark.skipif(not hasattr(os, "getpid"), reason="POSIX only")
def test_a_torn_last_line_waits_for_its_end(tmp_path: Path) -> None:
    sink = Sink()
    outbox = Outbox(tmp_path, sink, max_bytes=1 << 20, poll=0.01)
    os.write(outbox._own.fd, b'{"id": "torn"')  # a writer killed mid-line
    outbox.start()
    time.sleep(0.1)
    assert sink.received == []
    outbox.stop()
