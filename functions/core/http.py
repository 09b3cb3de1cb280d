"""The thin HTTP layer every function shares: routing, request ids, bodies, JSON, problems.

A function declares its routes once, each a ``Route`` (path, methods, handler, OpenAPI
operation); ``HttpApp`` turns a Flask request into a call of that handler, whatever it raises
into the one problem+json shape, and the routes into ``/openapi.json``. Nothing here knows
about models.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson
from flask import Request, Response
from pydantic import BaseModel, SecretStr, ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule

from functions.core.errors import (
    PROBLEM_CONTENT_TYPE,
    BadRequest,
    FunctionError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    error_for_status,
    internal_error,
    problem_body,
)
from functions.core.openapi import Operation, document

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
# Ids we accept from a client or Envoy: printable, bounded, safe to log and echo.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_JSON_TYPE = re.compile(r"^application/([\w.\-]+\+)?json\s*(;|$)", re.IGNORECASE)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request, str], Response]


def request_id(request: Request) -> str:
    """The id of this request: the client's or Envoy's ``X-Request-Id`` if sane, else a UUID."""
    sent = request.headers.get(REQUEST_ID_HEADER)
    if sent and _REQUEST_ID.fullmatch(sent):
        return sent
    return str(uuid.uuid4())


def json_response(
    body: Any, rid: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Serialise ``body`` with orjson; a JSON object body always carries ``job_id``."""
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json", exclude_none=True)
    if isinstance(body, dict) and "job_id" not in body:
        body = {"job_id": rid, **body}
    response = Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        mimetype="application/json",
    )
    if headers:
        response.headers.update(headers)
    return response


def problem_response(error: FunctionError, rid: str) -> Response:
    response = Response(
        orjson.dumps(problem_body(error, rid)), status=error.status, mimetype=PROBLEM_CONTENT_TYPE
    )
    response.headers.update(error.headers)
    return response


def read_body(
    request: Request,
    max_bytes: int,
    *,
    untyped_is_json: bool = False,
    received: Callable[[bytes], object] | None = None,
) -> bytes:
    """The JSON request body, bounded by ``max_bytes``: 415, 413 or 400 when it is not usable.

    ``untyped_is_json`` takes a body sent with no Content-Type as JSON, as KServe does for
    its protocols (stock V2 clients send none); a wrong type is still a 415. ``received`` gets
    the body as soon as it is read, before the check for a blank one: a caller that logs its
    inputs logs even that."""
    content_type = request.headers.get("Content-Type", "")
    if not (_JSON_TYPE.match(content_type) or (untyped_is_json and not content_type)):
        raise UnsupportedMediaType(
            f"send the body as application/json (got {content_type or 'no content type'!r})",
            headers={"Accept-Post": "application/json"},
        )
    raw = read_limited(request, max_bytes)
    if received is not None:
        received(raw)
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object")
    return raw


def read_limited(request: Request, max_bytes: int) -> bytes:
    """The request body, or 413 past ``max_bytes`` (chunked bodies carry no Content-Length)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"body of {request.content_length} bytes exceeds {max_bytes}")
    raw: bytes = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"body exceeds {max_bytes} bytes")
    return raw


def parse_model(model: type[M], raw: bytes | str) -> M:
    """Validate JSON text against ``model``: 400 if it is not JSON, 422 if it does not fit."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise _validation_problem(model, e) from e


def validate_model(model: type[M], value: object) -> M:
    """Validate already-parsed data against ``model``: 422 if it does not fit."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise _validation_problem(model, e) from e


def _validation_problem(model: type[BaseModel], e: ValidationError) -> FunctionError:
    errors = e.errors(include_url=False, include_input=False, include_context=False)
    if any(err["type"] == "json_invalid" for err in errors):
        return BadRequest(f"the body is not valid JSON: {errors[0]['msg']}")
    return ValidationFailed(
        f"{len(errors)} validation error(s) for {model.__name__}",
        errors=[{**err, "loc": list(err["loc"])} for err in errors],
    )


def framework_error(error: HTTPException) -> Response:
    """Flask's own errors (the framework's /robots.txt 404, a 500) in the one problem shape."""
    problem = error_for_status(error.code or 500, error.description or error.name)
    rid = str(uuid.uuid4())
    response = problem_response(problem, rid)
    response.headers[REQUEST_ID_HEADER] = rid
    return response


Auth = Literal["public", "token", "event"]
# Checks an event delivery's Authorization header (core.event_auth.EventVerifier.verify).
VerifyEvent = Callable[[str | None], object]


@dataclass(frozen=True)
class Route:
    """One endpoint, declared once: its path (werkzeug rule syntax), the methods it takes
    (None: every method), its handler, what the OpenAPI document says of it (None: not
    documented), and who may call it: anyone, only a caller sending the Service's token
    (``Authorization: Bearer <API_TOKEN>``), or (``event``) only the broker, with a token it
    was issued for this Service (when event auth is on). The handler's name is the
    endpoint's, in metrics and the prediction log."""

    path: str
    methods_taken: str | tuple[str, ...] | None
    handler: Handler
    operation: Operation | None = None
    auth: Auth = "public"

    @property
    def methods(self) -> tuple[str, ...]:
        taken = self.methods_taken
        if taken is None:
            return ("DELETE", "GET", "PATCH", "POST", "PUT")
        return (taken,) if isinstance(taken, str) else taken

    @property
    def endpoint(self) -> str:
        return self.handler.__name__

    def rule(self) -> Rule:
        methods = None if self.methods_taken is None else list(self.methods)
        return Rule(self.path, endpoint=self.endpoint, methods=methods)


# After every request: (request, rid, endpoint, response, seconds, the problem answered or None).
Observe = Callable[[Request, str, str, Response, float, FunctionError | None], None]


class HttpApp:
    """A function's HTTP surface, from its routes alone: dispatch by path and method, the
    request id on every answer, whatever a handler raises as the one problem shape, and the
    OpenAPI document at ``GET /openapi.json``.

    ``observe(request, rid, endpoint, response, seconds, problem)`` is called once per
    request (metrics, prediction logs), with the ``FunctionError`` answered if one was; what
    it raises is logged, never answered. ``headers`` are
    added to every response (e.g. which model answered); ``token`` is what a route declared
    ``auth="token"`` demands (None: such routes answer 503, naming ``API_TOKEN``);
    ``verify_event`` checks the ``Authorization`` of a route declared ``auth="event"``,
    raising the problem to answer (None: event auth is off, anyone inside may post); the
    rest are werkzeug ``Map``'s.
    """

    def __init__(
        self,
        title: str,
        routes: Sequence[Route],
        *,
        observe: Observe | None = None,
        headers: Mapping[str, str] | None = None,
        converters: Mapping[str, type[BaseConverter]] | None = None,
        token: SecretStr | None = None,
        verify_event: VerifyEvent | None = None,
        strict_slashes: bool = True,
        merge_slashes: bool = True,
    ) -> None:
        self.title, self.routes = title, tuple(routes)
        rules = Map(
            [r.rule() for r in self.routes],
            converters=converters,
            strict_slashes=strict_slashes,
            merge_slashes=merge_slashes,
        )
        # One adapter for every request: matching needs only the path and the method (binding
        # per request from the environ cost ~25 us, a tenth of an iris prediction).
        self._adapter = rules.bind("localhost")
        self._handlers = {r.endpoint: r.handler for r in self.routes}
        auths: dict[str, set[Auth]] = {}
        for r in self.routes:
            auths.setdefault(r.endpoint, set()).add(r.auth)
        if mixed := sorted(name for name, kinds in auths.items() if len(kinds) > 1):
            # the check goes by endpoint, the handler's name: one name, one auth
            raise ValueError(f"{title}: {mixed} declared with more than one auth")
        self._auth = {name: kinds.pop() for name, kinds in auths.items()}
        self._verify_event = verify_event
        self._token = token.get_secret_value().encode() if token is not None else None
        self._observe = observe
        self._headers = dict(headers or {})
        self._document: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        """The document, built on first use (a schema may need the loaded model) and kept."""
        if self._document is None:
            self._document = document(self.title, self.routes)
        return self._document

    def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        rid = request_id(request)
        endpoint = "unmatched"
        problem: FunctionError | None = None
        try:
            if request.path == "/openapi.json" and request.method in ("GET", "HEAD"):
                endpoint, response = "openapi", json_response(self.openapi(), rid)
            else:
                endpoint, args = self._adapter.match(request.path, request.method)
                request.view_args = dict(args)
                self._authorize(request, self._auth[endpoint])
                response = self._handlers[endpoint](request, rid)
        except FunctionError as e:
            if e.status >= 500:
                logger.warning("%s %s: %s", request.path, e.status, e.detail, extra={"job_id": rid})
            problem = e
        except (WerkzeugNotFound, RequestRedirect):
            # Map.match redirects (308) a path that matches only once its slashes are merged
            # or one is appended: for an API that is no route, not a redirect to follow.
            problem = NotFound(f"no route {request.path}")
        except WerkzeugMethodNotAllowed as e:
            allowed = ", ".join(sorted(e.valid_methods or ()))
            problem = MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}; use {allowed}",
                headers={"Allow": allowed},
            )
        except Exception:
            logger.exception("unhandled error on %s", request.path, extra={"job_id": rid})
            problem = internal_error()
        if problem is not None:
            response = problem_response(problem, rid)
        response.headers[REQUEST_ID_HEADER] = rid
        response.headers.update(self._headers)
        if self._observe is not None:
            try:
                seconds = time.perf_counter() - started
                self._observe(request, rid, endpoint, response, seconds, problem)
            except Exception:  # observing must never break an answer
                logger.exception("observing %s failed", request.path, extra={"job_id": rid})
        return response

    def _authorize(self, request: Request, auth: Auth) -> None:
        """For a tokened route, 401 unless the request carries this Service's bearer token
        (503 when it has none); for an event route, what ``verify_event`` raises."""
        if auth == "event":
            if self._verify_event is not None:
                self._verify_event(request.headers.get("Authorization"))
            return
        if auth != "token":
            return
        if self._token is None:
            raise ServiceUnavailable(
                f"{request.path} needs a token and this Service has none: set API_TOKEN"
            )
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        # compare_digest: the time taken says nothing of how much of the token was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            sent.strip().encode(), self._token
        ):
            raise Unauthorized(
                f"{request.path} needs Authorization: Bearer <API_TOKEN>",
                headers={"WWW-Authenticate": "Bearer"},
            )
