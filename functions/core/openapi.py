"""OpenAPI 3.1 documents generated from a function's routes and pydantic models.

Each function declares, beside its werkzeug ``Map``, an ``Operation`` per endpoint (summary,
request body, query and response models); ``document`` turns both into the document served
at ``GET /openapi.json``, errors included in the one problem shape, so clients and
schema-driven fuzzers (the tests run schemathesis) see the real contract.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from werkzeug.routing import Map

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


@dataclass(frozen=True)
class Operation:
    summary: str
    request: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    request_type: str = "application/json"
    response_type: str = "application/json"


def document(title: str, routes: Map, operations: Mapping[str, Operation]) -> dict[str, Any]:
    models = {m for op in operations.values() for m in (op.request, op.response) if m is not None}
    keys, schemas = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    components = {**schemas.get("$defs", {}), "Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for rule in routes.iter_rules():
        operation = operations.get(str(rule.endpoint))
        if operation is None:
            continue
        path = _ARGUMENT.sub(r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            spec = _operation(rule.arguments, operation, keys)
            spec["operationId"] = re.sub(r"\W+", "_", f"{method.lower()}{path}").strip("_")
            paths.setdefault(path, {})[method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {"schemas": components},
    }


def _operation(arguments: set[str], op: Operation, keys: Mapping[Any, Any]) -> dict[str, Any]:
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
        for name, field in op.query.model_fields.items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": field.is_required(),
                    "schema": {"type": "string"},
                }
            )
    if parameters:
        spec["parameters"] = parameters
    if op.request is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {op.request_type: {"schema": keys[(op.request, "validation")]}},
        }
    return spec
