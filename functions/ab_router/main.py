"""Entry point of the A/B router (Service ``ab-router``): HTTP adapters only.

The ``ab-test`` route sends it every request that carries a user key (``X-User-Id``); it
picks that user's variant (``logic.assign``) and forwards the request there unchanged, any
path and method, marked ``X-AB-Assignment: sticky`` and with the same ``X-Request-Id``.
Its own: ``GET /health`` and ``GET /openapi.json``, which documents the forwarded paths
with GET and POST (the variants are predictors), the user header the router needs, and any
JSON body (the variant validates it, not the router).
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Request, Response
from werkzeug.routing import BaseConverter

from functions.ab_router.logic import assign
from functions.ab_router.settings import AbRouterSettings
from functions.core.client import Client, forwarded_headers
from functions.core.entry import entry_points, lazy_service
from functions.core.errors import BadRequest, GatewayTimeout, ServiceUnavailable
from functions.core.http import HttpApp, Route, json_response, read_limited
from functions.core.openapi import Operation

FORWARDED = ("Content-Type", "Accept")
PATH_SAFE = "/:@!$&'()*+,;="  # RFC 3986 pchar delimiters, kept as they are in a path


class Everything(BaseConverter):
    """Any path at all: empty, with ``//`` or a decoded newline (all are forwarded)."""

    regex = r"[\s\S]*"
    part_isolating = False
    weight = 300


class AbRouterService:
    def __init__(self, settings: AbRouterSettings) -> None:
        self.settings = settings
        self.urls = settings.variants
        self.weights = list(settings.percents().items())
        self.client = Client(cluster_local_gateway=settings.cluster_local_gateway)
        forwarded = Operation(
            "Forwarded unchanged to the user's variant, which answers",
            request={},  # any JSON: the variant validates it
            body_required=False,
            headers={
                settings.user_header: "the user key: the same key always reaches the same variant"
            },
            methods=("GET", "POST"),
        )
        routes = [
            Route("/health", "GET", self.health, Operation("Health of the router")),
            Route("/<everything:path>", None, self.forward, forwarded),  # every method
        ]
        self.app = HttpApp(
            "ab-router", routes, converters={"everything": Everything}, merge_slashes=False
        )

    def close(self) -> None:
        """Close the kept connections (tests; a worker just exits)."""
        self.client.close()

    def health(self, request: Request, rid: str) -> Response:
        return json_response({"health": "ok"}, rid)

    def forward(self, request: Request, rid: str) -> Response:
        key = request.headers.get(self.settings.user_header)
        if not key:
            raise BadRequest(f"the A/B router needs a {self.settings.user_header} header")
        variant = assign(key, self.weights)
        response = self._forward(request, rid, self.urls[variant])
        response.headers["X-Variant"] = variant
        return response

    def _forward(self, request: Request, rid: str, base: str) -> Response:
        # Keyed in lower case, as forwarded_headers looks up "traceparent" and "tracestate".
        headers = forwarded_headers(rid, {k.lower(): v for k, v in request.headers.items()})
        headers.update({k: v for k in FORWARDED if (v := request.headers.get(k))})
        headers["X-AB-Assignment"] = "sticky"
        body = read_limited(request, self.settings.max_body_bytes)
        # The server hands us the decoded path: encode it again, so that a "%3F" stays part
        # of the path instead of starting a query. The query string is still the raw one.
        url = base + quote(request.path, safe=PATH_SAFE)
        if request.query_string:
            url += "?" + request.query_string.decode("latin-1")
        try:
            # WSGI header values are latin-1 text: they go out as the bytes they came in as.
            upstream = self.client.request(
                request.method,
                url,
                timeout=self.settings.deadline_seconds,
                headers=headers,
                body=body if body or request.method not in ("GET", "HEAD") else None,
            )
        except TimeoutError as e:
            raise GatewayTimeout(
                f"{base} did not answer in {self.settings.deadline_seconds:g}s"
            ) from e
        except OSError as e:
            raise ServiceUnavailable(f"{base} is unreachable: {type(e).__name__}") from e
        response = Response(upstream.body, status=upstream.status)
        for name in ("Content-Type", "X-Model", "X-Model-Version"):
            if (value := upstream.headers.get(name.lower())) is not None:
                response.headers[name] = value
        return response


service = lazy_service(AbRouterService, AbRouterSettings, "ab_router")
ab_router, warm = entry_points("ab_router", service)
