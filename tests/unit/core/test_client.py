"""Outbound headers: the request id and the W3C trace context, whatever the case of the names
the incoming headers came with."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from flask import Request
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder

from functions.core.client import forwarded_headers, trace_context

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACESTATE = "congo=t61rcWkgMzE"
EXPECTED = {"X-Request-Id": "r-1", "traceparent": TRACEPARENT, "tracestate": TRACESTATE}


def werkzeug_headers() -> Headers:
    """The headers of a request as the server hands them to a function."""
    sent = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE, "X-Other": "x"}
    return Request(EnvironBuilder(headers=Headers(sent)).get_environ()).headers


@pytest.mark.parametrize(
    "incoming",
    [
        werkzeug_headers(),
        dict(werkzeug_headers()),  # {"Traceparent": ...}: what dropped the context once
        {"traceparent": TRACEPARENT, "tracestate": TRACESTATE},
        {"TRACEPARENT": TRACEPARENT, "TraceState": TRACESTATE, "X-Other": "x"},
    ],
    ids=["werkzeug", "dict-of-werkzeug", "lower", "mixed"],
)
def test_the_trace_context_is_forwarded_whatever_the_case(
    incoming: Headers | Mapping[str, str],
) -> None:
    assert forwarded_headers("r-1", incoming) == EXPECTED


def test_nothing_but_the_request_id_without_a_trace() -> None:
    assert forwarded_headers("r-1") == {"X-Request-Id": "r-1"}
    assert forwarded_headers("r-1", {"X-Other": "x", "traceparent": ""}) == {"X-Request-Id": "r-1"}
    assert trace_context({"Accept": "*/*"}) == {}
