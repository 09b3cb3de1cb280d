"""Every proxy passes the W3C trace context (``traceparent``, ``tracestate``) unchanged to
every backend it calls: the real proxy apps, in-process as functions-framework builds them,
in front of a small aiohttp backend on loopback that records what reached it.

The test client hands the headers to the app as werkzeug does in production (named
``Traceparent``), which is what dropped them once (``dict(request.headers)``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from flask.testing import FlaskClient

from tests.helpers import AppThread, catch_all, function_client

TRACE = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
}
SINK = "/sink"  # where the sync-async proxy's events go (a CloudEvent, not a proxied call)
SETOSA = [5.1, 3.5, 1.4, 0.2]
# Each proxy target and its folder in functions/
FOLDER = {"sync_async": "sync_async", "fanout": "fanout", "ab_router": "ab_router"}


class Recorder:
    """A backend answering every path in a shape each proxy accepts, keeping each request's
    path and headers (names in lower case)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def answer(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, {k.lower(): v for k, v in request.headers.items()}))
        if request.path == SINK:
            response = web.Response(status=202)
        else:
            label = {"label": "tabby"}  # the sync-async proxy's fast /predict/label
            body = {"health": "ok", "data_sample": [SETOSA], "prediction": [0.9, 0.1]}
            response = web.json_response(
                {"prediction": label} if request.path == "/predict/label" else body
            )
        response.force_close()  # no kept socket outlives the test
        return response

    def calls(self) -> list[tuple[str, dict[str, str]]]:
        """What the proxy sent, the events to the sink left out."""
        return [(path, headers) for path, headers in self.seen if path != SINK]


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    thread = AppThread(catch_all(recorder.answer))
    yield thread.url, recorder
    thread.stop()


@pytest.fixture
def recorder(backend: tuple[str, Recorder]) -> Recorder:
    backend[1].seen.clear()
    return backend[1]


@pytest.fixture
def proxy(backend: tuple[str, Recorder], tmp_path: Path) -> Iterator[Callable[[str], FlaskClient]]:
    """Builds the real proxy app for a target, every backend of it the recorder."""
    url = backend[0]
    settings = {
        "sync_async": {
            "JOB_STORE_URL": f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
            "FAST_URL": url,
            "SLOW_URL": url,
            "K_SINK": url + SINK,
        },
        "fanout": {"BACKENDS": f"a={url},b={url}", "BACKEND_TIMEOUT": "5"},
        "ab_router": {"VARIANTS": f"svc={url},rf={url}", "WEIGHTS": "svc=60,rf=40"},
    }
    with ExitStack() as built:

        def build(target: str) -> FlaskClient:
            source = f"functions/{FOLDER[target]}/main.py"
            return built.enter_context(function_client(target, source, **settings[target]))

        yield build


def assert_passed_on(recorder: Recorder, expected_calls: int) -> None:
    calls = recorder.calls()
    assert len(calls) == expected_calls, [path for path, _ in calls]
    for path, headers in calls:
        assert {k: headers.get(k) for k in TRACE} == TRACE, path


@pytest.mark.parametrize(
    ("target", "method", "path", "body", "calls"),
    [
        ("sync_async", "POST", "/predict", {"image_data": "aGk="}, 1),
        ("sync_async", "GET", "/predict/test", None, 1),
        ("sync_async", "GET", "/metadata", None, 2),
        ("sync_async", "GET", "/health/all", None, 2),
        ("fanout", "POST", "/predict", {"data": [SETOSA]}, 2),
        ("fanout", "POST", "/predict/label", {"data": [SETOSA]}, 2),
        ("fanout", "GET", "/predict/get/test", None, 2),
        ("fanout", "GET", "/predict/post/test", None, 4),  # each backend's /metadata, then /predict
        ("fanout", "GET", "/metadata", None, 2),
        ("fanout", "GET", "/health/all", None, 2),
    ],
)
def test_the_sync_async_and_fanout_proxies_pass_it_on(
    proxy: Callable[[str], FlaskClient],
    recorder: Recorder,
    target: str,
    method: str,
    path: str,
    body: Any,
    calls: int,
) -> None:
    response = proxy(target).open(path, method=method, json=body, headers=TRACE)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_passed_on(recorder, calls)


def test_the_ab_router_passes_it_on(
    proxy: Callable[[str], FlaskClient], recorder: Recorder
) -> None:
    response = proxy("ab_router").get("/predict/test", headers={"X-User-Id": "alice", **TRACE})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_passed_on(recorder, 1)
