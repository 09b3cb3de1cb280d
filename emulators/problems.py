"""The emulators' own answers in the project's one error shape: an RFC 9457 problem+json
with the request's id, as every function answers (``functions.core.errors``). The gateway and
the broker answer their own errors with ``problem``; ``problems`` is the aiohttp middleware
that shapes aiohttp's routing and body-limit errors and unexpected exceptions the same way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from functions.core.errors import (
    PROBLEM_CONTENT_TYPE,
    FunctionError,
    error_for_status,
    internal_error,
    problem_body,
)

logger = logging.getLogger(__name__)


def request_id(request: web.BaseRequest) -> str:
    """The client's ``X-Request-Id``, else a new one (as Envoy makes one)."""
    return request.headers.get("X-Request-Id") or str(uuid.uuid4())


@web.middleware
async def problems(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own HTTP errors (no route, body over ``client_max_size``) and unexpected
    exceptions as problems; an app lists it in ``middlewares``."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        allow = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
        error = error_for_status(e.status, e.text or e.reason)
        error.headers.update(allow)
        return problem(error, request_id(request))
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return problem(internal_error(), request_id(request))


def problem(error: FunctionError, rid: str) -> web.Response:
    return web.Response(
        status=error.status,
        body=orjson.dumps(problem_body(error, rid)),
        content_type=PROBLEM_CONTENT_TYPE,
        headers={"X-Request-Id": rid, **error.headers},
    )
