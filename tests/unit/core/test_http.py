"""The shared HTTP layer: request ids, bodies, and the one problem shape."""

from __future__ import annotations

import orjson
import pytest
from flask import Request, Response
from pydantic import BaseModel, ConfigDict, SecretStr
from werkzeug.exceptions import BadGateway, TooManyRequests
from werkzeug.test import EnvironBuilder

from functions.core.errors import (
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    error_for_status,
    problem_body,
)
from functions.core.http import (
    HttpApp,
    Route,
    framework_error,
    json_response,
    parse_model,
    read_body,
    request_id,
)
from functions.core.openapi import Operation


def make_request(**kwargs: object) -> Request:
    return Request(EnvironBuilder(**kwargs).get_environ())  # type: ignore[arg-type]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    n: int


def test_request_id_is_taken_from_the_header_when_sane() -> None:
    assert request_id(make_request(headers={"X-Request-Id": "abc-123"})) == "abc-123"
    made = request_id(make_request(headers={"X-Request-Id": "bad id <script>"}))
    assert len(made) == 36
    assert made != "bad id <script>"
    assert request_id(make_request()) != request_id(make_request())


def test_json_object_bodies_carry_the_job_id() -> None:
    response = json_response({"a": 1}, "rid-1")
    assert orjson.loads(response.get_data()) == {"job_id": "rid-1", "a": 1}
    assert orjson.loads(json_response([1, 2], "rid-2").get_data()) == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (
            {"data": b"n=1", "content_type": "application/x-www-form-urlencoded"},
            UnsupportedMediaType,
        ),
        ({"data": b'{"n": 1}'}, UnsupportedMediaType),
        ({"data": b"", "content_type": "application/json"}, BadRequest),
        ({"data": b"x" * 101, "content_type": "application/json"}, PayloadTooLarge),
    ],
)
def test_unusable_bodies(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        read_body(make_request(method="POST", **kwargs), max_bytes=100)


def test_json_with_charset_and_suffix_types_are_accepted() -> None:
    for content_type in ("application/json; charset=utf-8", "application/cloudevents+json"):
        assert read_body(make_request(method="POST", data=b"{}", content_type=content_type), 100)


def test_parse_model_tells_malformed_from_invalid() -> None:
    assert parse_model(Body, b'{"n": 3}').n == 3
    with pytest.raises(BadRequest):
        parse_model(Body, b"{nope")
    with pytest.raises(ValidationFailed) as info:
        parse_model(Body, b'{"n": "3"}')
    assert info.value.errors == [
        {"type": "int_type", "loc": ["n"], "msg": "Input should be a valid integer"}
    ]


def test_problem_shape() -> None:
    body = problem_body(ValidationFailed("bad", errors=[{"loc": ["x"]}]), "rid")
    assert body == {
        "type": "tag:ml-serving-functions,2026:problem/validation-error",
        "title": "Request failed validation",
        "status": 422,
        "detail": "bad",
        "instance": "rid",
        "error": "bad",
        "errors": [{"loc": ["x"]}],
    }
    assert error_for_status(413, "x").status == 413


def test_framework_errors_keep_their_status() -> None:
    for error, title in ((TooManyRequests(), "Too Many Requests"), (BadGateway(), "Bad Gateway")):
        response = framework_error(error)
        body = orjson.loads(response.get_data())
        assert (response.status_code, body["status"], body["title"]) == (
            error.code,
            error.code,
            title,
        )
        assert response.mimetype == "application/problem+json"


def item(request: Request, rid: str) -> Response:
    return json_response({"args": request.view_args}, rid)


def raw(request: Request, rid: str) -> Response:
    return Response(status=202)


APP = HttpApp(
    "test",
    [
        Route("/items/<name>", "GET", item, Operation("An item")),
        Route("/dir/", "GET", item),  # not documented
        Route("/raw", ("POST", "PUT"), raw, Operation("Raw", request=lambda: Body)),
        Route("/any/<path>", None, raw, Operation("Any", request={}, body_required=False,
              headers={"X-User": "who"}, methods=("GET", "POST"))),
    ],
)  # fmt: skip


@pytest.mark.parametrize(
    "path",
    [
        "/items//x",  # matches only once merge_slashes has merged the "//"
        "/items/%2Fx",  # the same, the slash percent-encoded
        "/dir",  # matches only with the rule's trailing slash appended
    ],
)
def test_a_path_that_matches_only_after_a_redirect_is_a_404_problem(path: str) -> None:
    response = APP(make_request(path=path))
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    body = orjson.loads(response.get_data())
    assert body["status"] == 404
    assert body["instance"] == response.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/items/a", 200), ("PUT", "/raw", 202), ("DELETE", "/any/x", 202),
     ("GET", "/raw", 405), ("GET", "/nowhere", 404)],
)  # fmt: skip
def test_every_answer_carries_the_request_id(method: str, path: str, status: int) -> None:
    response = APP(make_request(method=method, path=path, headers={"X-Request-Id": "r-7"}))
    assert (response.status_code, response.headers["X-Request-Id"]) == (status, "r-7")
    if status == 405:
        assert response.headers["Allow"] == "POST, PUT"


def test_the_document_comes_from_the_routes() -> None:
    response = APP(make_request(path="/openapi.json"))
    doc = orjson.loads(response.get_data())
    assert response.headers["X-Request-Id"]
    assert set(doc["paths"]) == {"/items/{name}", "/raw", "/any/{path}"}
    assert doc["paths"]["/items/{name}"]["get"]["parameters"][0]["name"] == "name"
    raw_body = doc["paths"]["/raw"]["put"]["requestBody"]
    assert raw_body["required"] is True
    assert raw_body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Body"
    }
    anything = doc["paths"]["/any/{path}"]
    assert set(anything) == {"get", "post"}
    assert "requestBody" not in anything["get"]  # no body on a GET
    assert anything["post"]["requestBody"] == {"content": {"application/json": {"schema": {}}}}
    assert {"name": "X-User", "in": "header", "required": True, "description": "who",
            "schema": {"type": "string", "minLength": 1}} in anything["post"]["parameters"]  # fmt: skip


# -- routes declared auth="token" ---------------------------------------------------------

TOKEN = "unit-token-0123456789"


def secret(request: Request, rid: str) -> Response:
    return json_response({"secret": True}, rid)


def tokened(token: SecretStr | None) -> HttpApp:
    return HttpApp(
        "tokened",
        [
            Route("/secret/<name>", "GET", secret, Operation("Secret"), auth="token"),
            Route("/items/<name>", "GET", item, Operation("An item")),
        ],
        token=token,
    )


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("", 401), (f"Basic {TOKEN}", 401), (TOKEN, 401), ("Bearer", 401),
     (f"Bearer {TOKEN}x", 401), (f"Bearer {TOKEN[:-1]}", 401), (f"Bearer {TOKEN}", 200),
     (f"bearer {TOKEN}", 200)],
)  # fmt: skip
def test_a_tokened_route_needs_the_bearer_token(authorization: str | None, status: int) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = tokened(SecretStr(TOKEN))(make_request(path="/secret/a", headers=headers))
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
        body = orjson.loads(response.get_data())
        assert (body["status"], body["title"]) == (401, "Unauthorized")
        assert TOKEN not in response.get_data(as_text=True)
    public = tokened(SecretStr(TOKEN))(make_request(path="/items/a", headers=headers))
    assert public.status_code == 200


def test_a_tokened_route_without_a_token_configured_is_503_naming_the_setting() -> None:
    app = tokened(None)
    response = app(make_request(path="/secret/a", headers={"Authorization": "Bearer x"}))
    assert response.status_code == 503
    assert "API_TOKEN" in orjson.loads(response.get_data())["detail"]
    assert app(make_request(path="/items/a")).status_code == 200


def test_the_document_declares_the_bearer_scheme_on_tokened_operations_only() -> None:
    doc = orjson.loads(tokened(None)(make_request(path="/openapi.json")).get_data())
    assert doc["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer"}
    }
    assert doc["paths"]["/secret/{name}"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in doc["paths"]["/items/{name}"]["get"]
    assert (
        "securitySchemes"
        not in orjson.loads(APP(make_request(path="/openapi.json")).get_data())["components"]
    )


def test_one_handler_is_public_or_tokened_not_both() -> None:
    with pytest.raises(ValueError, match="item"):
        HttpApp("mixed", [Route("/a", "GET", item), Route("/b", "GET", item, auth="token")])
