"""OpenAPI 3.1 documents generated from a function's routes and pydantic models.

Each route a function declares (``core.http.Route``) carries an ``Operation``: summary,
request body, query and response models. ``document`` turns the routes into the document
``HttpApp`` serves at ``GET /openapi.json``, errors included in the one problem shape, so
clients and schema-driven fuzzers (the tests run schemathesis) see the real contract.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from functions.core.errors import PROBLEM_CONTENT_TYPE

_ARGUMENT = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "error": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


Schema = type[BaseModel] | dict[str, Any]  # a model, or a raw JSON schema ({}: any JSON)
BODYLESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class Operation:
    """What the document says of one endpoint. ``request`` may be a callable returning the
    schema when it is known only once the Service runs (the predictor's, from its card)."""

    summary: str
    request: Schema | Callable[[], Schema] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    request_type: str = "application/json"
    response_type: str = "application/json"
    body_required: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)  # required header -> description
    methods: tuple[str, ...] | None = None  # documented methods, when not all the route takes


class Documented(Protocol):
    """A route as ``core.http`` declares it."""

    @property
    def path(self) -> str: ...

    @property
    def methods(self) -> tuple[str, ...]: ...

    @property
    def operation(self) -> Operation | None: ...

    @property
    def auth(self) -> str: ...


# The scheme of a route declared auth="token": Authorization: Bearer <API_TOKEN>; of one
# declared auth="event": the broker's OIDC token (core.event_auth).
BEARER = "bearerAuth"
EVENT_TOKEN = "eventToken"
SCHEMES = {
    "token": (BEARER, {"type": "http", "scheme": "bearer"}),
    "event": (EVENT_TOKEN, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}),
}


def document(title: str, routes: Iterable[Documented]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (those with an operation)."""
    documented = [(r, r.operation) for r in routes if r.operation is not None]
    requests = {id(op): _resolved(op.request) for _, op in documented}
    models = {m for m in requests.values() if isinstance(m, type)}
    models |= {op.response for _, op in documented if op.response is not None}
    keys, schemas = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    components = {**schemas.get("$defs", {}), "Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route, operation in documented:
        path = _ARGUMENT.sub(r"{\1}", route.path)
        arguments = _ARGUMENT.findall(route.path)
        for method in sorted(set(operation.methods or route.methods) - {"HEAD", "OPTIONS"}):
            request = None if method in BODYLESS else requests[id(operation)]
            spec = _operation(arguments, operation, request, keys)
            spec["operationId"] = re.sub(r"\W+", "_", f"{method.lower()}{path}").strip("_")
            if route.auth in SCHEMES:
                spec["security"] = [{SCHEMES[route.auth][0]: []}]
            paths.setdefault(path, {})[method.lower()] = spec
    found: dict[str, Any] = {"schemas": components}
    if used := [SCHEMES[a] for a in sorted({r.auth for r, _ in documented}) if a in SCHEMES]:
        found["securitySchemes"] = dict(used)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": found,
    }


def _resolved(request: Schema | Callable[[], Schema] | None) -> Schema | None:
    if request is None or isinstance(request, dict | type):
        return request
    return request()


def _operation(
    arguments: list[str], op: Operation, request: Schema | None, keys: Mapping[Any, Any]
) -> dict[str, Any]:
    problem = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    ok: dict[str, Any] = {"description": "OK"}
    if op.response is not None:
        ok["content"] = {op.response_type: {"schema": keys[(op.response, "validation")]}}
    elif op.response_type != "application/json":
        ok["content"] = {op.response_type: {"schema": {"type": "string"}}}
    spec: dict[str, Any] = {
        "summary": op.summary,
        "responses": {"200": ok, "4XX": {"description": "problem", "content": problem},
                      "5XX": {"description": "problem", "content": problem}},
    }  # fmt: skip
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in sorted(arguments)
    ]
    if op.query is not None:
        for name, query in op.query.model_fields.items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": query.is_required(),
                    "schema": {"type": "string"},
                }
            )
    for name, description in op.headers.items():
        parameters.append(
            {
                "name": name,
                "in": "header",
                "required": True,
                "description": description,
                "schema": {"type": "string", "minLength": 1},
            }
        )
    if parameters:
        spec["parameters"] = parameters
    if request is not None:
        schema = request if isinstance(request, dict) else keys[(request, "validation")]
        body: dict[str, Any] = {"content": {op.request_type: {"schema": schema}}}
        spec["requestBody"] = {"required": True, **body} if op.body_required else body
    return spec
