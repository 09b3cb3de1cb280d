"""Entry point of the A/B router (Service ``ab-router``): HTTP adapters only.

The ``ab-test`` route sends it every request that carries a user key (``X-User-Id``); it
picks that user's variant (``logic.assign``) and forwards the request there unchanged,
marked ``X-AB-Assignment: sticky`` and with the same ``X-Request-Id``. ``GET /health``.
"""

from __future__ import annotations

import functions_framework
import httpx
from flask import Request, Response

from functions.ab_router.logic import assign
from functions.ab_router.settings import RouterSettings, pairs
from functions.core.client import forwarded_headers, pooled_client
from functions.core.entry import lazy_service
from functions.core.errors import BadRequest, FunctionError, GatewayTimeout, ServiceUnavailable
from functions.core.http import (
    json_response,
    problem_response,
    read_limited,
    request_id,
)

FORWARDED = ("Content-Type", "Accept")


class Router:
    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.urls = pairs(settings.variants)
        self.weights = [(name, int(w)) for name, w in pairs(settings.weights).items()]
        self.client = pooled_client(cluster_local_gateway=settings.cluster_local_gateway)

    def __call__(self, request: Request) -> Response:
        rid = request_id(request)
        try:
            if request.path == "/health" and request.method == "GET":
                return json_response({"health": "ok"}, rid)
            key = request.headers.get(self.settings.user_header)
            if not key:
                raise BadRequest(f"the A/B router needs a {self.settings.user_header} header")
            variant = assign(key, self.weights)
            response = self._forward(request, rid, self.urls[variant])
            response.headers["X-Variant"] = variant
            return response
        except FunctionError as e:
            return problem_response(e, rid)

    def _forward(self, request: Request, rid: str, base: str) -> Response:
        headers = forwarded_headers(rid, dict(request.headers))
        headers.update({k: v for k in FORWARDED if (v := request.headers.get(k))})
        headers["X-AB-Assignment"] = "sticky"
        body = read_limited(request, self.settings.max_body_bytes)
        try:
            upstream = self.client.request(
                request.method,
                base + request.full_path.rstrip("?"),
                content=body,
                headers=headers,
                timeout=self.settings.deadline_seconds,
            )
        except httpx.TimeoutException as e:
            raise GatewayTimeout(
                f"{base} did not answer in {self.settings.deadline_seconds:g}s"
            ) from e
        except httpx.TransportError as e:
            raise ServiceUnavailable(f"{base} is unreachable: {type(e).__name__}") from e
        response = Response(upstream.content, status=upstream.status_code)
        for name in ("Content-Type", "X-Model", "X-Model-Version"):
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        response.headers["X-Request-Id"] = rid
        return response


router = lazy_service(Router, RouterSettings, "ab_router")


@functions_framework.http
def ab_router(request: Request) -> Response:
    """Every path: forwarded to the user's variant."""
    return router()(request)


def warm() -> None:
    router()
