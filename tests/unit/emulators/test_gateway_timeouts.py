"""The gateway's read deadlines, with real sockets on loopback: a client that sends its
request head or body too slowly (slowloris) is cut off, one that sends in time is served.

Issue 16's reproduction: without a header deadline, slowloris connections stayed open until
the fd limit; here 200 of them are all closed within the deadline plus a margin.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web

from emulators import dev
from emulators.deadlines import ReadTimeouts
from emulators.gateway import Gateway
from emulators.routing import RouteTable
from tests.helpers import AppThread, catch_all
from tests.unit.emulators.test_routing import ksvc

TIMEOUTS = ReadTimeouts(headers=1.0, body=1.5)
MARGIN = 1.5  # seconds past a deadline by which the connection must be closed
HEAD = b"POST /echo/ HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"


async def answer(request: web.Request) -> web.Response:
    return web.json_response({"got": len(await request.read())})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """The gateway with short deadlines in front of one Service that answers what it got."""
    upstream = AppThread(catch_all(answer))
    gateway = Gateway(
        lambda: RouteTable.build([ksvc("echo")], {"echo-00001": upstream.url}),
        "http://127.0.0.1",
        timeouts=TIMEOUTS,
    )
    served = AppThread(gateway.runner(gateway.app(), access_log=None))
    yield served.port
    served.stop()
    upstream.stop()


def connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn.settimeout(0.2)
    return conn


def dribble(conn: socket.socket, data: bytes, every: float, seconds: float) -> tuple[bytes, float]:
    """Send ``data`` a byte every ``every`` seconds, reading whatever comes back, until the
    server closes the connection or ``seconds`` pass: what came back, and when it closed
    (``inf`` when it did not)."""
    start, answer = time.monotonic(), b""
    conn.settimeout(every)
    for byte in data:
        if time.monotonic() - start > seconds:
            break
        try:
            conn.sendall(bytes([byte]))
            chunk = conn.recv(65536)
        except TimeoutError:
            continue  # nothing came back within ``every``: the next byte
        except (BrokenPipeError, ConnectionResetError):
            return answer, time.monotonic() - start
        if not chunk:
            return answer, time.monotonic() - start
        answer += chunk
    return answer, float("inf")


def read_until_closed(conn: socket.socket, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (within ``seconds``), and when it closed."""
    start, data = time.monotonic(), b""
    while time.monotonic() - start < seconds:
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            return data, time.monotonic() - start
        data += chunk
    return data, float("inf")


def problem_of(answer: bytes) -> tuple[int, str, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers["content-type"], orjson.loads(body)


def test_a_slowloris_head_gets_408_and_is_closed_at_the_header_deadline(port: int) -> None:
    with connect(port) as conn:
        endless = HEAD + b"X-Slow: " + b"a" * 1000
        answer, closed = dribble(conn, endless, every=0.2, seconds=TIMEOUTS.headers + 5)
    assert closed <= TIMEOUTS.headers + MARGIN, "the slow head was not cut off"
    status, content_type, body = problem_of(answer)
    assert (status, content_type) == (408, "application/problem+json")
    assert body["status"] == 408
    assert "head" in str(body["detail"])


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(port: int) -> None:
    with connect(port) as conn:
        answer, closed = read_until_closed(conn, TIMEOUTS.headers + 5)
    assert closed <= TIMEOUTS.headers + MARGIN
    assert answer == b""  # no request, so nothing to answer


def test_a_slow_body_gets_408(port: int) -> None:
    with connect(port) as conn:
        conn.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b"[1, 2")  # 95 bytes never come
        answer, closed = read_until_closed(conn, TIMEOUTS.body + 15)
    status, content_type, body = problem_of(answer)
    assert (status, content_type) == (408, "application/problem+json")
    assert "body" in str(body["detail"])
    # The answer says Connection: close; aiohttp then drains the rest for a bounded while.
    assert closed <= TIMEOUTS.body + 10 + MARGIN


def test_a_kept_alive_client_is_served_across_pauses_longer_than_the_header_deadline(
    port: int,
) -> None:
    request = HEAD + b"Content-Length: 2\r\n\r\n[]"
    with connect(port) as conn:
        for _ in range(3):
            # The head comes in a few pieces, each well within the deadline.
            for piece in (request[:10], request[10:40], request[40:]):
                conn.sendall(piece)
                time.sleep(0.05)
            answer = b""
            while b'"got"' not in answer:
                try:
                    answer += conn.recv(65536)
                except TimeoutError:
                    continue
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert b'{"got": 2}' in answer
            time.sleep(TIMEOUTS.headers + 0.3)  # idle between requests: not a slow head


def test_two_hundred_slowloris_connections_are_all_closed(port: int) -> None:
    conns = [connect(port) for _ in range(200)]
    try:
        for conn in conns:
            conn.sendall(HEAD + b"X-Slow: a")  # and never the rest
        time.sleep(TIMEOUTS.headers + MARGIN)
        answers = [read_until_closed(conn, 0.2) for conn in conns]
        still_open = sum(closed == float("inf") for _, closed in answers)
        assert still_open == 0, f"{still_open} of 200 slowloris connections still open"
        # Past the listen backlog, a client's bytes can still be in retransmission when its
        # deadline comes: the gateway saw nothing, so it closes without an answer.
        assert {answer[:12] for answer, _ in answers} <= {b"HTTP/1.1 408", b""}
        assert sum(answer.startswith(b"HTTP/1.1 408") for answer, _ in answers) >= 100
    finally:
        for conn in conns:
            conn.close()


def test_the_header_deadline_is_at_most_sixty_seconds() -> None:
    with pytest.raises(ValueError, match="not in"):
        ReadTimeouts(headers=61)
    with pytest.raises(ValueError, match="positive"):
        ReadTimeouts(body=0)


@pytest.mark.parametrize("flag", ["--header-timeout=61", "--header-timeout=0", "--body-timeout=x"])
def test_make_dev_refuses_a_deadline_out_of_bounds(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        dev.main([flag])
    assert stopped.value.code == 2
    assert flag.split("=")[0] in capsys.readouterr().err
