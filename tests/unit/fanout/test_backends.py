"""The fan-out over real sockets: concurrency, the deadline and what backends can do wrong
(small aiohttp servers on loopback; the client itself is tested in tests/unit/core)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiohttp import web

from functions.core.client import Client
from functions.fanout.backends import Backends, fetch
from functions.fanout.logic import Failure
from tests.helpers import AppThread, free_port


async def answer(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("sleep", "0")))
    return web.json_response(
        {
            "host": request.host,
            "path": request.path,
            "rid": request.headers.get("X-Request-Id"),
            "traceparent": request.headers.get("traceparent"),
        }
    )


async def refuse(request: web.Request) -> web.Response:
    body = b'{"status": 422, "detail": "too short", "errors": []}'
    return web.Response(status=422, body=body, content_type="application/problem+json")


async def garbage(request: web.Request) -> web.Response:
    return web.Response(text="<html>oops</html>", content_type="text/html")


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    app = web.Application()
    app.router.add_route("*", "/refuse", refuse)
    app.router.add_get("/garbage", garbage)
    app.router.add_route("*", "/{tail:.*}", answer)
    thread = AppThread(app)
    yield thread.url
    thread.stop()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as p:
        yield p


def test_calls_run_at_once_and_the_late_one_is_a_timeout(
    site: str, client: Client, pool: ThreadPoolExecutor
) -> None:
    backends = Backends({}, 0.6, client, pool)
    started = time.monotonic()
    fanned = backends.gather(
        {
            name: functools.partial(fetch, client, "GET", url, "rid-1", 0.6, {})
            for name, url in {
                "a": f"{site}/a?sleep=0.3",
                "b": f"{site}/b?sleep=0.3",
                "slow": f"{site}/c?sleep=3",
            }.items()
        }
    )
    took = time.monotonic() - started
    assert 0.55 < took < 1.0, took  # the deadline, not 0.3 + 0.3 + 3
    assert list(fanned.answers) == ["a", "b"]
    assert fanned.failures["slow"] == Failure(504, "timeout", "no answer within 0.6s")
    assert fanned.answers["a"]["rid"] == "rid-1"


def test_each_forwards_the_request_id_and_trace_context(
    site: str, client: Client, pool: ThreadPoolExecutor
) -> None:
    backends = Backends({"a": site, "b": site}, 2.0, client, pool)
    fanned = backends.each("GET", "/health", "job-42", {"traceparent": "00-ab-cd-01"})
    assert [body["rid"] for body in fanned.answers.values()] == ["job-42", "job-42"]
    assert fanned.answers["a"]["path"] == "/health"
    assert fanned.answers["b"]["traceparent"] == "00-ab-cd-01"


def test_what_a_backend_can_do_wrong_is_an_outcome(site: str, client: Client) -> None:
    refused = fetch(client, "POST", f"{site}/refuse", "r", 2.0, {}, {"data": [[1]]})
    assert isinstance(refused, Failure)
    assert (refused.status, refused.reason, refused.detail) == (422, "backend-error", "too short")
    assert refused.problem == {"status": 422, "detail": "too short", "errors": []}
    bad = fetch(client, "GET", f"{site}/garbage", "r", 2.0, {})
    assert bad == Failure(502, "bad-answer", f"{site}/garbage answered no JSON object")
    down = fetch(client, "GET", f"http://127.0.0.1:{free_port()}/health", "r", 2.0, {})
    assert isinstance(down, Failure)
    assert (down.status, down.reason) == (503, "unavailable")
