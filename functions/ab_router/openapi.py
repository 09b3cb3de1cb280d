"""The router's OpenAPI document: its own ``GET /health`` and the paths it forwards.

Every other path, with any method, goes unchanged to the user's variant. The variants are
predictors answering GET and POST, so those two are documented, for any path, with the user
header the router needs and any JSON body (the variant validates it, not the router).
"""

from __future__ import annotations

from typing import Any

from werkzeug.routing import Map, Rule

from functions.core.openapi import Operation, document

DOCUMENTED = Map(
    [
        Rule("/health", endpoint="health", methods=["GET"]),
        Rule("/<path>", endpoint="forward", methods=["GET", "POST"]),
    ]
)
OPERATIONS = {
    "health": Operation("Health of the router"),
    "forward": Operation("Forwarded unchanged to the user's variant, which answers"),
}


def openapi(user_header: str) -> dict[str, Any]:
    doc = document("ab-router", DOCUMENTED, OPERATIONS)
    for method, spec in doc["paths"]["/{path}"].items():
        spec["parameters"].append(
            {
                "name": user_header,
                "in": "header",
                "required": True,
                "description": "the user key: the same key always reaches the same variant",
                "schema": {"type": "string", "minLength": 1},
            }
        )
        if method == "post":
            spec["requestBody"] = {"content": {"application/json": {"schema": {}}}}
    return doc
