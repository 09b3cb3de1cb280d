"""The router as the production server dispatches to it (``core.serve.direct``), in-process:
its own endpoints, and each request forwarded unchanged (path, query, method, body, headers)
to its user's variant, a small aiohttp server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import orjson
import pytest
from aiohttp import web
from werkzeug.test import Client, TestResponse

from functions.ab_router.logic import assign
from functions.core.settings import REPO_ROOT
from tests.helpers import AppThread, catch_all, free_port, function_client

SOURCE = str(REPO_ROOT / "functions" / "ab_router" / "main.py")

WEIGHTS = [("svc", 60), ("rf", 40)]


async def answer(request: web.Request) -> web.Response:
    """A variant that answers what reached it (and closes: no kept socket outlives the test)."""
    response = web.json_response(
        {
            "method": request.method,
            "raw_path": request.rel_url.raw_path,
            "query": request.rel_url.raw_query_string,
            "headers": {k.decode().lower(): v.decode("latin-1") for k, v in request.raw_headers},
            "body": (await request.read()).decode(),
        },
        headers={"X-Model": "echo"},
    )
    response.force_close()
    return response


@pytest.fixture(scope="module")
def variant() -> Iterator[str]:
    thread = AppThread(catch_all(answer))
    yield thread.url
    thread.stop()


def client(variants: str, **env: str) -> AbstractContextManager[Client]:
    """A fresh router app, dispatched to as the production server does."""
    env = {"VARIANTS": variants, "WEIGHTS": "svc=60,rf=40", **env}
    return function_client("ab_router", SOURCE, direct=True, **env)


@pytest.fixture
def router(variant: str) -> Iterator[Client]:
    with client(f"svc={variant},rf={variant}") as router:
        yield router


def test_openapi_documents_health_and_the_forwarded_paths(variant: str) -> None:
    with client(f"svc={variant},rf={variant}", USER_HEADER="X-Customer") as router:
        doc = router.get("/openapi.json").json
    assert doc is not None
    assert set(doc["paths"]) == {"/health", "/{path}"}
    forwarded = doc["paths"]["/{path}"]
    assert set(forwarded) == {"get", "post"}
    for spec in forwarded.values():
        header = next(p for p in spec["parameters"] if p["in"] == "header")
        assert header["name"] == "X-Customer"
        assert header["required"]


def test_health_is_the_routers_own(router: Client) -> None:
    response = router.get("/health")
    assert response.status_code == 200
    assert response.json == {"job_id": response.headers["X-Request-Id"], "health": "ok"}


@pytest.mark.parametrize(
    ("sent", "raw_path", "query"),
    [
        ("/predict/test", "/predict/test", ""),
        # Decoded by the server, so encoded again: "%3F" must not become the query.
        ("/job/a%3Fb%2541?x=%zz&y=1", "/job/a%3Fb%2541", "x=%zz&y=1"),
        ("/job/a%0Ab", "/job/a%0Ab", ""),
        ("/v2//models//x/", "/v2//models//x/", ""),
        ("/", "/", ""),
        ("/caf%C3%A9", "/caf%C3%A9", ""),
    ],
)
def test_the_path_and_query_reach_the_variant_as_sent(
    router: Client, sent: str, raw_path: str, query: str
) -> None:
    response = router.get(sent, headers={"X-User-Id": "alice"})
    assert response.status_code == 200
    assert response.json is not None
    assert (response.json["raw_path"], response.json["query"]) == (raw_path, query)


def test_method_body_and_headers_are_forwarded_to_the_users_variant(router: Client) -> None:
    response = router.put(
        "/predict",
        data=b'{"data": [[1, 2, 3, 4]]}',
        headers={
            "X-User-Id": "bob",
            "X-Request-Id": "r-1",
            "Content-Type": "application/json",
            "Accept": "text/caf\xe9",  # obs-text: a valid field value, forwarded byte for byte
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )
    assert response.status_code == 200
    assert response.headers["X-Variant"] == assign("bob", WEIGHTS)
    assert response.headers["X-Model"] == "echo"
    assert response.headers["X-Request-Id"] == "r-1"
    seen = response.json
    assert seen is not None
    assert (seen["method"], seen["body"]) == ("PUT", '{"data": [[1, 2, 3, 4]]}')
    headers = seen["headers"]
    assert headers["x-ab-assignment"] == "sticky"
    assert headers["x-request-id"] == "r-1"
    assert headers["accept"] == "text/caf\xe9"
    assert headers["traceparent"].startswith("00-0af7")
    assert "x-user-id" not in headers


def problem_of(response: TestResponse) -> dict[str, object]:
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, object] = orjson.loads(response.get_data())
    assert body["status"] == response.status_code
    return body


def test_without_a_user_key_is_a_400_problem(router: Client) -> None:
    response = router.get("/predict/test")
    assert response.status_code == 400
    assert "X-User-Id" in str(problem_of(response)["detail"])


def test_a_body_over_the_limit_is_a_413_problem(variant: str) -> None:
    with client(f"svc={variant},rf={variant}", MAX_BODY_BYTES="8") as small:
        response = small.post("/predict", data=b"x" * 9, headers={"X-User-Id": "alice"})
    assert response.status_code == 413
    problem_of(response)


def test_an_unreachable_variant_is_a_503_problem() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with client(f"svc={down},rf={down}") as router:
        response = router.get("/x", headers={"X-User-Id": "alice"})
    assert response.status_code == 503
    problem_of(response)
