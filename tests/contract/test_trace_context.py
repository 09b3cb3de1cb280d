"""Every proxy passes the W3C trace context (``traceparent``, ``tracestate``) unchanged to
every backend it calls: the real proxy apps, in-process as functions-framework builds them,
in front of a small aiohttp backend on loopback that records what reached it.

The test client hands the headers to the app as werkzeug does in production (named
``Traceparent``), which is what dropped them once (``dict(request.headers)``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from flask.testing import FlaskClient

from tests.helpers import AppThread, function_client

TRACE = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
}
SINK = "/sink"  # where the sync-async proxy's events go (a CloudEvent, not a proxied call)
SETOSA = [5.1, 3.5, 1.4, 0.2]


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
    app = web.Application()
    app.router.add_route("*", r"/{tail:[\s\S]*}", recorder.answer)
    thread = AppThread(app)
    yield thread.url, recorder
    thread.stop()


@pytest.fixture
def recorder(backend: tuple[str, Recorder]) -> Recorder:
    backend[1].seen.clear()
    return backend[1]


@pytest.fixture
def sync_async(backend: tuple[str, Recorder], tmp_path: Path) -> Iterator[FlaskClient]:
    url = backend[0]
    with function_client(
        "sync_async",
        "functions/sync_async_proxy/main.py",
        JOB_STORE_URL=f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        FAST_URL=url,
        SLOW_URL=url,
        K_SINK=url + SINK,
    ) as client:
        yield client


@pytest.fixture
def fanout(backend: tuple[str, Recorder]) -> Iterator[FlaskClient]:
    url = backend[0]
    with function_client(
        "fanout", "functions/fanout_proxy/main.py", BACKENDS=f"a={url},b={url}", BACKEND_TIMEOUT="5"
    ) as client:
        yield client


@pytest.fixture
def ab_router(backend: tuple[str, Recorder]) -> Iterator[FlaskClient]:
    url = backend[0]
    with function_client(
        "ab_router",
        "functions/ab_router/main.py",
        VARIANTS=f"svc={url},rf={url}",
        WEIGHTS="svc=60,rf=40",
    ) as client:
        yield client


def assert_passed_on(recorder: Recorder, expected_calls: int) -> None:
    calls = recorder.calls()
    assert len(calls) == expected_calls, [path for path, _ in calls]
    for path, headers in calls:
        assert {k: headers.get(k) for k in TRACE} == TRACE, path


@pytest.mark.parametrize(
    ("method", "path", "body", "calls"),
    [
        ("POST", "/predict", {"image_data": "aGk="}, 1),
        ("GET", "/predict/test", None, 1),
        ("GET", "/metadata", None, 2),
        ("GET", "/health/all", None, 2),
    ],
)
def test_the_sync_async_proxy_passes_it_on(
    sync_async: FlaskClient, recorder: Recorder, method: str, path: str, body: Any, calls: int
) -> None:
    response = sync_async.open(path, method=method, json=body, headers=TRACE)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_passed_on(recorder, calls)


@pytest.mark.parametrize(
    ("method", "path", "body", "calls"),
    [
        ("POST", "/predict", {"data": [SETOSA]}, 2),
        ("POST", "/predict/label", {"data": [SETOSA]}, 2),
        ("GET", "/predict/get/test", None, 2),
        ("GET", "/predict/post/test", None, 4),  # each backend's /metadata, then /predict
        ("GET", "/metadata", None, 2),
        ("GET", "/health/all", None, 2),
    ],
)
def test_the_fanout_proxy_passes_it_on(
    fanout: FlaskClient, recorder: Recorder, method: str, path: str, body: Any, calls: int
) -> None:
    response = fanout.open(path, method=method, json=body, headers=TRACE)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_passed_on(recorder, calls)


def test_the_ab_router_passes_it_on(ab_router: FlaskClient, recorder: Recorder) -> None:
    response = ab_router.get("/predict/test", headers={"X-User-Id": "alice", **TRACE})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_passed_on(recorder, 1)
