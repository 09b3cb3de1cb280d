"""Contract of the fan-out proxy, in-process: the real app over real predictor apps served
on loopback sockets (werkzeug), plus an address where nothing listens."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from functions.core.settings import REPO_ROOT
from functions.fanout.schemas import FannedResponse, LabelResponse
from tests.contract.test_predict_tabular import assert_problem
from tests.helpers import PREDICT_SOURCE, free_port, function_client

SOURCE = str(REPO_ROOT / "functions" / "fanout" / "main.py")
SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, str]]:
    """Real predictors (the one-vs-rest cards) on loopback ports, in threads."""
    servers: list[BaseWSGIServer] = []
    urls = {}
    with ExitStack() as apps:
        for species in ("setosa", "virginica"):
            client = apps.enter_context(
                function_client("predict", PREDICT_SOURCE, MODEL_NAME=f"iris-{species}")
            )
            server = make_server("127.0.0.1", 0, client.application, threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            urls[species] = f"http://127.0.0.1:{server.server_port}"
        yield urls
        for server in servers:
            server.shutdown()
            server.server_close()


def proxy(backends: dict[str, str]) -> AbstractContextManager[FlaskClient]:
    pairs = ",".join(f"{name}={url}" for name, url in backends.items())
    return function_client("fanout", SOURCE, BACKENDS=pairs, BACKEND_TIMEOUT="5")


@pytest.fixture
def fanout(backends: dict[str, str]) -> Iterator[FlaskClient]:
    with proxy(backends) as client:
        yield client


@pytest.fixture
def half_down(backends: dict[str, str]) -> Iterator[FlaskClient]:
    with proxy({**backends, "versicolor": f"http://127.0.0.1:{free_port()}"}) as client:
        yield client


@pytest.fixture
def all_down() -> Iterator[FlaskClient]:
    with proxy({n: f"http://127.0.0.1:{free_port()}" for n in ("a", "b")}) as client:
        yield client


def test_every_backend_answers_in_the_seeds_shape(fanout: FlaskClient) -> None:
    response = fanout.post("/predict", json={"data": [SETOSA]}, headers={"X-Request-Id": "c-1"})
    assert response.status_code == 200
    assert response.headers["X-Answered"] == "2/2"
    body = FannedResponse.model_validate(response.get_json())
    assert body.job_id == "c-1"
    assert body.errors is None
    assert set(body.model_extra or {}) == {"setosa", "virginica"}
    label = LabelResponse.model_validate(
        fanout.post("/predict/label", json={"data": [SETOSA]}).get_json()
    )
    assert label.prediction.label == "setosa"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "path", ["/health/all", "/metadata", "/predict/get/test", "/predict/post/test"]
)
def test_the_seeds_get_endpoints(fanout: FlaskClient, path: str) -> None:
    response = fanout.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Answered"] == "2/2"
    assert response.get_json()["job_id"] == response.headers["X-Request-Id"]


def test_a_backend_down_is_listed_under_errors(half_down: FlaskClient) -> None:
    response = half_down.post("/predict/label", json={"data": [SETOSA]})
    assert response.status_code == 200
    assert response.headers["X-Answered"] == "2/3"
    body = LabelResponse.model_validate(response.get_json())
    assert body.errors is not None
    assert body.errors["versicolor"].status == 503
    assert body.errors["versicolor"].reason == "unavailable"


def test_all_down_is_a_503_problem_with_every_reason(all_down: FlaskClient) -> None:
    response = all_down.get("/health/all")
    body = assert_problem(response, 503)
    assert response.headers["X-Answered"] == "0/2"
    assert [(e["backend"], e["reason"]) for e in body["errors"]] == [
        ("a", "unavailable"),
        ("b", "unavailable"),
    ]


def test_input_the_backends_refuse_is_their_422(fanout: FlaskClient) -> None:
    body = assert_problem(fanout.post("/predict", json={"data": [[1.0, 2.0, 3.0]]}), 422)
    assert body["errors"][0]["type"] == "too_short"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": b"{not json", "content_type": "application/json"}, 400),
        ({"data": b"", "content_type": "application/json"}, 400),
        ({"data": b'{"data": [[1, 2, 3, 4]]}', "content_type": "text/plain"}, 415),
        ({"json": {"data": [["a", 2, 3, 4]]}}, 422),
        ({"json": {"data": []}}, 422),
        ({"json": {"rows": [[1, 2, 3, 4]]}}, 422),
    ],
)
def test_bad_input_is_answered_without_calling_anyone(
    all_down: FlaskClient, kwargs: dict[str, Any], status: int
) -> None:
    assert_problem(all_down.post("/predict/label", **kwargs), status)


def test_unknown_route_and_wrong_method(all_down: FlaskClient) -> None:
    assert_problem(all_down.get("/nope"), 404)
    response = all_down.get("/predict")
    assert_problem(response, 405)
    assert response.headers["Allow"] == "POST"
