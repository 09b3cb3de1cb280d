"""Domain errors and their one mapping to RFC 9457 problem details.

Every error a function can answer with is a ``FunctionError`` subclass; ``problem_body``
turns one into the single JSON error shape (``type``, ``title``, ``status``, ``detail``,
``instance`` = the request id, ``errors`` for validation). Unexpected exceptions never reach
a client as text: the HTTP layer logs them and answers a generic 500 problem.
"""

from __future__ import annotations

import functools
from http import HTTPStatus
from typing import Any, ClassVar, cast

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "tag:ml-serving-functions,2026:problem/"


class FunctionError(Exception):
    """Base of every error a function answers with; subclasses fix status, slug and title."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class BadRequest(FunctionError, ValueError):
    status, slug, title = 400, "bad-request", "Malformed request"


class ValidationFailed(FunctionError, ValueError):
    status, slug, title = 422, "validation-error", "Request failed validation"


class Unauthorized(FunctionError):
    status, slug, title = 401, "unauthorized", "Unauthorized"


class NotFound(FunctionError, LookupError):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(FunctionError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class RequestTimeout(FunctionError, TimeoutError):
    """The client did not send its request (head or body) in time."""

    status, slug, title = 408, "request-timeout", "Request timeout"


class PayloadTooLarge(FunctionError, ValueError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(FunctionError, ValueError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported content type"


class ServiceUnavailable(FunctionError, RuntimeError):
    status, slug, title = 503, "unavailable", "Service unavailable"


class GatewayTimeout(FunctionError, TimeoutError):
    status, slug, title = 504, "timeout", "Backend timed out"


class ModelLoadError(FunctionError, RuntimeError):
    """A model file is missing, corrupt, or does not match its card."""

    status, slug, title = 503, "model-unavailable", "Model unavailable"


def problem_body(error: FunctionError, instance: str) -> dict[str, Any]:
    """The RFC 9457 body for ``error``; ``instance`` is the request (job) id."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + error.slug,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": instance,
        # The Open Inference Protocol's error member, so KServe and Triton clients read it too
        # (RFC 9457 allows extension members).
        "error": error.detail,
    }
    if error.errors is not None:
        body["errors"] = error.errors
    return body


def error_for_status(status: int, detail: str) -> FunctionError:
    """The error answering ``status``: its declared class, else one that keeps the status
    (a 429, a 502), titled with its standard reason phrase."""
    for cls in _ALL:
        if cls.status == status:
            return cls(detail)
    return _status_error(status)(detail)


@functools.cache
def _status_error(status: int) -> type[FunctionError]:
    if status == FunctionError.status:
        return FunctionError
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "HTTP error"
    attributes = {"status": status, "slug": f"http-{status}", "title": title}
    return cast(type[FunctionError], type(f"Http{status}", (FunctionError,), attributes))


_ALL = (
    BadRequest,
    ValidationFailed,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    ServiceUnavailable,
    GatewayTimeout,
)


def internal_error(
    detail: str = "unexpected error; see the logs for this request id",
) -> FunctionError:
    """The generic 500 answered for bugs: the cause goes to the log, never to the client."""
    return FunctionError(detail)
