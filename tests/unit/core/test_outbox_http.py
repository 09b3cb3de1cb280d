"""The outbox's HTTP sender against a real HTTP/1.1 server on loopback: one keep-alive
connection, the answers a sink may give (keep-alive or close, empty or chunked, refusals),
and the sender's bookkeeping (event types, the spooled gauge)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from functions.core.outbox import SPOOLED, HttpSender, Sender, Writer, _event_type
from tests.helpers import free_port


class Recorded(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections = 0
    bodies: list[tuple[str, str, bytes]] = []

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append((self.path, self.headers["Content-Type"], body))
        if self.path == "/refuse":
            self._answer(503, b"busy", {"Content-Length": "4"})
        elif self.path == "/close":
            self._answer(202, b"", {"Content-Length": "0", "Connection": "close"})
            self.close_connection = True
        elif self.path == "/chunked":
            self._answer(200, b"2\r\nok\r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"})
        else:
            self._answer(202, b"", {"Content-Length": "0"})

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[str]:
    Recorded.connections, Recorded.bodies = 0, []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Recorded)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def line(i: int) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": f"e-{i}", "type": "t.v1", "data": {"i": i}})


def test_events_go_over_one_keep_alive_connection(sink: str) -> None:
    with closing(HttpSender(f"{sink}/events?x=1")) as send:
        for i in range(20):
            send(line(i))
    assert Recorded.connections == 1
    assert [body for _, _, body in Recorded.bodies] == [line(i) for i in range(20)]
    assert {(path, kind) for path, kind, _ in Recorded.bodies} == {
        ("/events?x=1", "application/cloudevents+json")
    }


@pytest.mark.parametrize("path", ["/close", "/chunked"])
def test_every_answer_shape_of_a_sink_is_read(sink: str, path: str) -> None:
    with closing(HttpSender(f"{sink}{path}")) as send:
        for i in range(5):
            send(line(i))
    assert len(Recorded.bodies) == 5
    assert Recorded.connections == (5 if path == "/close" else 1)


def test_a_refusal_raises_and_the_next_event_still_goes(sink: str) -> None:
    with closing(HttpSender(f"{sink}/refuse")) as refused:
        with pytest.raises(RuntimeError, match="503"):
            refused(line(0))
        with pytest.raises(RuntimeError, match="503"):
            refused(line(1))  # the connection was kept: the answer was read whole
    assert Recorded.connections == 1


def test_nothing_listening_raises() -> None:
    with pytest.raises(ConnectionRefusedError):
        HttpSender(f"http://127.0.0.1:{free_port()}/", timeout=2)(line(0))


def test_the_event_type_is_read_without_parsing_the_line() -> None:
    nested = {"specversion": "1.0", "type": "t.v1", "data": {"type": "inner"}}
    assert _event_type(orjson.dumps(nested)) == "t.v1"
    assert _event_type(orjson.dumps({"data": {}, "type": "late.v1"})) == "late.v1"
    assert _event_type(b"not json") == ""


def test_the_spooled_gauge_counts_what_waits(tmp_path: Path, sink: str) -> None:
    writer = Writer(tmp_path, max_bytes=1 << 20)
    for i in range(7):
        writer.emit({"specversion": "1.0", "id": f"e-{i}", "type": "t.v1"})
    with closing(HttpSender(f"{sink}/refuse")) as refused:
        assert not Sender(tmp_path, refused).drain()
    assert SPOOLED._value.get() == 7
    with closing(HttpSender(f"{sink}/events")) as send:
        assert Sender(tmp_path, send).drain()
    assert SPOOLED._value.get() == 0
