"""The one outbound client against real HTTP/1.1 servers on loopback: keep-alive reuse, every
answer shape a server may give, deadlines, connections the server closed, cluster-local URLs
sent to the gateway with their Host, forks; and the headers a proxy forwards."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping

import orjson
import pytest
from aiohttp import web
from flask import Request
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder

from functions.core.client import BadReply, Client, forwarded_headers, trace_context
from functions.core.errors import GatewayTimeout, ServiceUnavailable
from tests.helpers import AppThread, CountingHandler, free_port, http_server

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACESTATE = "congo=t61rcWkgMzE"
EXPECTED = {"X-Request-Id": "r-1", "traceparent": TRACEPARENT, "tracestate": TRACESTATE}


class Answering(CountingHandler):
    """Answers by path."""

    def _handle(self) -> None:
        self.read_request()
        path = self.path.split("?")[0]
        twice = {"X-Twice": "a"}
        if path == "/refuse":
            self.answer(503, b"busy", twice)
        elif path == "/close":
            self.answer(202, b"", twice | {"Connection": "close"})
            self.close_connection = True
        elif path == "/chunked":
            chunked = twice | {"Transfer-Encoding": "chunked", "Content-Length": ""}
            self._raw(200, b"2\r\nok\r\n0\r\n\r\n", chunked)
        elif path == "/until-close":  # no length: the body ends when the connection does
            self._raw(200, b"all of it", twice | {"Connection": "close"})
            self.close_connection = True
        elif path == "/garbage":
            self.wfile.write(b"SMTP ready\r\n\r\n")
            self.close_connection = True
        elif path == "/slow":
            time.sleep(1.0)
            self.answer(200, b"late")
        else:
            echo = orjson.dumps({"path": self.path, "host": self.headers["Host"]})
            json = twice | {"Content-Type": "application/json"}
            if self.command == "HEAD":
                self._raw(200, b"", json | {"Content-Length": str(len(echo))})
            else:
                self.answer(200, echo, json)

    do_GET = do_POST = do_PUT = do_HEAD = _handle

    def _raw(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """An answer whose framing headers are exactly ``headers`` (none when empty)."""
        self.send_response(status)
        for name, value in headers.items():
            if value:
                self.send_header(name, value)
        self.send_header("X-Twice", "b")
        self.end_headers()
        self.wfile.write(body)

    def answer(self, status: int, body: bytes = b"", headers: Mapping[str, str] = {}) -> None:
        self._raw(status, body, {"Content-Length": str(len(body)), **headers})


@pytest.fixture
def server() -> Iterator[str]:
    with http_server(Answering) as url:
        yield url


def test_calls_go_over_one_keep_alive_connection(server: str, client: Client) -> None:
    for i in range(20):
        reply = client.request("POST", f"{server}/e?x={i}", timeout=2, body=b"%d" % i)
        assert reply.status == 200
        assert reply.json() == {"path": f"/e?x={i}", "host": server.removeprefix("http://")}
    assert Answering.connections == 1
    assert [body for *_, body in Answering.seen] == [b"%d" % i for i in range(20)]
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-twice"] == "a, b"  # repeated fields, joined as RFC 9110 allows


@pytest.mark.parametrize(
    ("path", "status", "body", "connections"),
    [
        ("/close", 202, b"", 3),
        ("/chunked", 200, b"ok", 1),
        ("/until-close", 200, b"all of it", 3),
        ("/refuse", 503, b"busy", 1),  # an error status is an answer, not an exception
    ],
)
def test_every_answer_shape_is_read(
    server: str, client: Client, path: str, status: int, body: bytes, connections: int
) -> None:
    for _ in range(3):
        reply = client.request("GET", server + path, timeout=2)
        assert (reply.status, reply.body) == (status, body)
    assert Answering.connections == connections


def test_a_head_answer_has_no_body_and_keeps_the_connection(server: str, client: Client) -> None:
    for _ in range(2):
        reply = client.request("HEAD", f"{server}/", timeout=2)
        assert (reply.status, reply.body) == (200, b"")
        assert int(reply.headers["content-length"]) > 0
    assert client.request("GET", f"{server}/", timeout=2).json()["path"] == "/"
    assert Answering.connections == 1


def test_what_a_server_can_do_wrong_raises_an_oserror(server: str, client: Client) -> None:
    with pytest.raises(BadReply):
        client.request("GET", f"{server}/garbage", timeout=2)
    with pytest.raises(ConnectionRefusedError):
        client.request("GET", f"http://127.0.0.1:{free_port()}/", timeout=2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.request("GET", f"{server}/slow", timeout=0.2)
    assert time.monotonic() - started < 0.9  # the deadline, not the server, ended it
    assert client.request("GET", f"{server}/", timeout=2).status == 200  # still usable


def test_a_line_break_in_a_header_is_refused(server: str, client: Client) -> None:
    with pytest.raises(ValueError, match="line break"):
        client.request("GET", f"{server}/", timeout=2, headers={"X-A": "a\r\nX-B: smuggled"})
    assert Answering.seen == []


def test_call_forwards_the_request_and_turns_failures_into_problems(
    server: str, client: Client
) -> None:
    reply = client.call("POST", f"{server}/j", "r-1", seconds=2, incoming=EXPECTED, json={"a": 1})
    assert reply.status == 200
    _, _, headers, body = Answering.seen[-1]
    assert (headers["X-Request-Id"], headers["traceparent"]) == ("r-1", TRACEPARENT)
    assert (headers["Content-Type"], orjson.loads(body)) == ("application/json", {"a": 1})
    with pytest.raises(GatewayTimeout, match="within 0.2s"):
        client.call("GET", f"{server}/slow", "r-2", seconds=0.2)
    with pytest.raises(ServiceUnavailable, match="unreachable: ConnectionRefusedError"):
        client.call("GET", f"http://127.0.0.1:{free_port()}/", "r-3", seconds=2)


def test_a_connection_closed_while_idle_is_replaced(client: Client) -> None:
    """A raw server that answers with keep-alive, then closes each connection at once: the
    client sees the close before reuse, or fails before any byte of the answer and retries
    once on a new connection; either way every call is answered."""
    listener = socket.create_server(("127.0.0.1", 0))
    port, accepted = listener.getsockname()[1], []

    def serve() -> None:
        while len(accepted) < 5:
            conn, _ = listener.accept()
            accepted.append(conn)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for _ in range(5):
            assert client.request("GET", f"http://127.0.0.1:{port}/", timeout=2).body == b"ok"
            time.sleep(0.05)  # the close reaches the kept socket
    finally:
        thread.join(5)
        listener.close()
    assert len(accepted) == 5


async def peer(request: web.Request) -> web.Response:
    await asyncio.sleep(0)
    transport = request.transport
    assert transport is not None
    body = {"peer": transport.get_extra_info("peername")[1], "host": request.host}
    response = web.json_response(body | {"path": request.path})
    if request.query.get("close"):
        response.force_close()
    return response


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", peer)
    thread = AppThread(app)
    yield thread.url
    thread.stop()


def test_connections_are_kept_alive_and_closed_ones_replaced(site: str, client: Client) -> None:
    def port(query: str = "") -> int:
        return int(client.request("GET", f"{site}/{query}", timeout=2).json()["peer"])

    first = port()
    assert port() == first  # the same connection, kept alive
    assert port("?close=1") == first  # the server closes it after answering...
    assert port() != first  # ...so the next call opens a new one


def test_cluster_local_urls_go_to_the_gateway_with_their_host(site: str) -> None:
    via_gateway = Client(4, cluster_local_gateway=site)
    try:
        url = "http://iris-setosa.ml-serving.svc.cluster.local/predict?x=1"
        via = via_gateway.request("GET", url, timeout=2).json()
        direct = via_gateway.request("GET", f"{site}/direct", timeout=2).json()
    finally:
        via_gateway.close()
    assert via["host"] == "iris-setosa.ml-serving.svc.cluster.local"
    assert via["path"] == "/predict"
    assert direct["host"] == site.removeprefix("http://")  # any other host: as is


def test_a_forked_child_opens_its_own_connections(site: str, client: Client) -> None:
    parent = client.request("GET", f"{site}/", timeout=2).json()["peer"]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the port it called from, and leave at once
        try:
            child = client.request("GET", f"{site}/", timeout=2).json()["peer"]
            os.write(write, str(child).encode())
        finally:
            os._exit(0)
    os.close(write)
    child = int(os.read(read, 64) or 0)
    os.close(read)
    os.waitpid(pid, 0)
    assert child
    assert child != parent
    assert client.request("GET", f"{site}/", timeout=2).json()["peer"] == parent


def werkzeug_headers() -> Headers:
    """The headers of a request as the server hands them to a function."""
    sent = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE, "X-Other": "x"}
    return Request(EnvironBuilder(headers=Headers(sent)).get_environ()).headers


@pytest.mark.parametrize(
    "incoming",
    [
        werkzeug_headers(),
        dict(werkzeug_headers()),  # {"Traceparent": ...}: what dropped the context once
        {"traceparent": TRACEPARENT, "tracestate": TRACESTATE},
        {"TRACEPARENT": TRACEPARENT, "TraceState": TRACESTATE, "X-Other": "x"},
    ],
    ids=["werkzeug", "dict-of-werkzeug", "lower", "mixed"],
)
def test_the_trace_context_is_forwarded_whatever_the_case(
    incoming: Headers | Mapping[str, str],
) -> None:
    assert forwarded_headers("r-1", incoming) == EXPECTED


def test_nothing_but_the_request_id_without_a_trace() -> None:
    assert forwarded_headers("r-1") == {"X-Request-Id": "r-1"}
    assert forwarded_headers("r-1", {"X-Other": "x", "traceparent": ""}) == {"X-Request-Id": "r-1"}
    assert trace_context({"Accept": "*/*"}) == {}
