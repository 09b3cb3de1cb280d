"""CloudEvents, in one place: the only module that imports the ``cloudevents`` SDK.

functions-framework pins the SDK's 1.x API, so a move to 2.x touches this file alone. Event
types are ``<PREFIX>.<noun>.<verb-past>.v1`` constants defined here once; extension
attributes are lower-case alphanumerics of at most 20 characters (``jobid``).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from cloudevents.conversion import to_binary as _to_binary
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http

from functions.core.errors import BadRequest

PREFIX = "dev.mlserving"
JOB_ID = "jobid"  # extension attribute carrying the request's job_id through every hop

# Every event type the functions emit or consume (a test checks Triggers name only these).
INFERENCE_REQUESTED = f"{PREFIX}.inference.requested.v1"  # sync-async: slow model, please
INFERENCE_COMPLETED = f"{PREFIX}.inference.completed.v1"  # sync-async worker's reply
PREDICTION_LOGGED = f"{PREFIX}.prediction.logged.v1"  # prediction log: one per prediction
EVENT_TYPES = (INFERENCE_REQUESTED, INFERENCE_COMPLETED, PREDICTION_LOGGED)

__all__ = [
    "EVENT_TYPES",
    "INFERENCE_COMPLETED",
    "INFERENCE_REQUESTED",
    "JOB_ID",
    "MAX_DEPTH",
    "PREDICTION_LOGGED",
    "PREFIX",
    "CloudEvent",
    "attributes",
    "check_depth",
    "copy",
    "from_structured",
    "is_event",
    "make",
    "parse",
    "to_binary",
    "to_structured",
]


MAX_DEPTH = 64  # of JSON nesting in an event: ours nest 6 deep at most
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes and all
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))
_PAIR = re.compile(rb"\[\]|\{\}")  # an innermost pair


def check_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    """400 when the JSON in ``body`` nests deeper than ``limit``, before any parser recurses
    into it (the SDK's stdlib ``json`` raised RecursionError, a 500, at ~1000 levels). Of the
    brackets outside strings, each pass drops the innermost pairs: the depth is the number
    of passes, all at C speed. Unbalanced brackets are the parser's to report."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    for depth in range(limit + 1):
        if not brackets:
            return
        brackets, dropped = _PAIR.subn(b"", brackets)
        if not dropped:  # unbalanced (not JSON): as deep as the openers left could go
            if depth + brackets.count(b"[") + brackets.count(b"{") <= limit:
                return  # the parser says what is wrong
            break
    raise BadRequest(f"JSON nested deeper than {limit} levels")


def parse(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """A CloudEvent from an HTTP message in binary or structured mode; 400 if it is not one,
    or if its JSON nests deeper than ``MAX_DEPTH``."""
    if _is_json(headers):
        check_depth(body)
    try:
        return from_http(dict(headers), body, data_unmarshaller=_json_or_text)
    except (GenericException, ValueError) as e:  # ValueError: a body that is not UTF-8
        raise BadRequest(f"not a valid CloudEvent: {e}") from e


def _is_json(headers: Mapping[str, str]) -> bool:
    """Whether the SDK's parser, or ours, reads the body as JSON: structured mode (anything
    that is not binary), or binary-mode data of a JSON content type."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return "ce-specversion" not in lowered or "json" in lowered.get("content-type", "")


def _json_or_text(data: bytes | str | None) -> Any:
    """Binary-mode data as the SDK reads it (JSON, else the text as is), parsed by orjson:
    the SDK's stdlib ``json`` was a sixth of what a sink spent per event."""
    if not data:
        return data
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data


def is_event(headers: Mapping[str, str]) -> bool:
    """Whether an HTTP message carries a CloudEvent (binary ``ce-*`` or structured mode)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return "ce-specversion" in lowered or lowered.get("content-type", "").startswith(
        "application/cloudevents"
    )


def make(
    type: str, source: str, data: Any, *, id: str | None = None, **extensions: str
) -> CloudEvent:
    attrs = {"type": type, "source": source, "id": id or str(uuid.uuid4()), **extensions}
    if not isinstance(data, bytes | None):
        attrs["datacontenttype"] = "application/json"
    return CloudEvent(attrs, data)


def from_structured(event: Mapping[str, Any]) -> CloudEvent:
    """A CloudEvent from its structured-mode JSON object (``data`` beside the attributes)."""
    attrs = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
    return CloudEvent(attrs, event.get("data"))


def copy(event: CloudEvent) -> CloudEvent:
    return CloudEvent(attributes(event), event.data)


def attributes(event: CloudEvent) -> dict[str, Any]:
    return dict(event.get_attributes())


def to_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary-mode headers (all strings) and body, ready for an HTTP request or response."""
    headers, body = _to_binary(event)
    return {k: str(v) for k, v in headers.items()}, body if isinstance(body, bytes) else str(
        body
    ).encode()


def to_structured(event: CloudEvent) -> bytes:
    """Structured-mode JSON text: ``data`` beside the attributes (bytes as ``data_base64``)."""
    body = attributes(event)
    if isinstance(event.data, bytes):
        body["data_base64"] = base64.b64encode(event.data).decode()
    elif event.data is not None:
        body["data"] = event.data
    return orjson.dumps(body)
