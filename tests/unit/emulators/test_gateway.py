"""The gateway's own answers over raw sockets: every error a problem+json, every path forwarded
as it was sent, and the one exception, requests aiohttp's HTTP parser rejects (a small
aiohttp variant and the gateway, each on loopback in a thread)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web

from emulators.gateway import Gateway
from emulators.routing import RouteTable
from tests.helpers import AppThread, catch_all
from tests.unit.emulators.test_routing import ksvc, vs

LIMIT = 1024


async def answer(request: web.Request) -> web.Response:
    """A variant that answers the path and query that reached it."""
    body = {"raw_path": request.rel_url.raw_path, "query": request.rel_url.raw_query_string}
    response = web.json_response(body)
    response.force_close()  # no kept socket outlives the test
    return response


@pytest.fixture(scope="module")
def gateway() -> Iterator[int]:
    variant = AppThread(catch_all(answer))
    teapot = {
        "fault": {"abort": {"httpStatus": 429, "percentage": {"value": 100}}},
        "route": [{"destination": {"host": "echo.ns.svc.cluster.local"}}],
    }
    resources = [ksvc("echo"), ksvc("broken"), vs("teapot", [teapot])]
    # A revision URL no client accepts: what a bug in the gateway looks like to a client.
    upstreams = {"echo-00001": variant.url, "broken-00001": "http://127.0.0.1:99999"}
    gateway = Gateway(
        lambda: RouteTable.build(resources, upstreams), "http://127.0.0.1", max_body_bytes=LIMIT
    )
    thread = AppThread(gateway.runner(gateway.app(), access_log=None))
    yield thread.port
    thread.stop()
    variant.stop()


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` byte for byte; the answer's status, headers (lower-case) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
        while len(body) < int(headers.get("content-length", 0)) and (chunk := conn.recv(65536)):
            body += chunk
    return int(status_line.split()[1]), headers, body


def get(path: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([b"GET " + path + b" HTTP/1.1", b"Host: gw", *headers, b"", b""])


@pytest.mark.parametrize(
    ("sent", "raw_path", "query"),
    [
        # aiohttp's router matches the decoded path, where %0A is a newline.
        (b"/echo/job/a%0Ab", "/job/a%0Ab", ""),
        # Forwarded undecoded: %25 stays %25 and %3F does not start a query.
        (b"/echo/job/%2541%3F?q=%zz&r=1", "/job/%2541%3F", "q=%zz&r=1"),
        (b"/echo//x/%2E%2E/y", "//x/%2E%2E/y", ""),
    ],
)
def test_a_path_is_routed_and_forwarded_as_sent(
    gateway: int, sent: bytes, raw_path: str, query: str
) -> None:
    status, _, body = exchange(gateway, get(sent))
    assert status == 200, body
    assert orjson.loads(body) == {"raw_path": raw_path, "query": query}


def over_limit_chunked() -> bytes:
    chunk = b"%x\r\n%s\r\n" % (LIMIT, b"x" * LIMIT)
    head = b"POST /echo/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + chunk * 2 + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n", 404),  # no route in aiohttp's router
        (get(b"/nowhere/x"), 404),
        (
            b"POST /echo/x HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n%s"
            % (LIMIT + 1, b"x" * (LIMIT + 1)),
            413,
        ),
        (over_limit_chunked(), 413),
        (get(b"/teapot/x"), 429),  # a fault status no domain error declares
        (get(b"/broken/x"), 500),
    ],
    ids=["asterisk", "no-route", "body-too-large", "chunked-too-large", "abort-429", "bug"],
)
def test_every_answer_of_the_gateways_own_is_a_problem(
    gateway: int, request_bytes: bytes, status: int
) -> None:
    got, headers, body = exchange(gateway, request_bytes)
    assert got == status, body
    assert headers["content-type"] == "application/problem+json"
    problem = orjson.loads(body)
    assert problem["status"] == status
    assert problem["instance"] == headers["x-request-id"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        get(b"/echo/x", b"X-A: a\x01b"),  # a control character in a field value
        get(b"/echo/x", b"X-A: a\x7fb"),
        get(b"/echo/" + b"a" * 8200),  # request line over aiohttp's 8190 bytes
        get(b"/echo/x", b"X-A: " + b"a" * 8200),
        get(b"/echo/a b"),
        b"G(T /echo/x HTTP/1.1\r\nHost: gw\r\n\r\n",
        b"GET /echo/x HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"POST /echo/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["ctl", "del", "long-line", "long-header", "space", "method", "no-host", "te-and-cl"],
)
def test_what_the_http_parser_rejects_is_aiohttps_plain_400(
    gateway: int, request_bytes: bytes
) -> None:
    # The documented exception (emulators/gateway.py): answered before any app code runs.
    status, headers, _ = exchange(gateway, request_bytes)
    assert status == 400
    assert headers["content-type"].startswith("text/plain")
