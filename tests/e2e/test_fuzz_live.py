"""Schema-driven fuzzing of the proxies, the A/B router and the worker, live through the local
platform (their backends must run for an honest answer): never a 5xx, every 4xx in the one
problem shape."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.e2e.conftest import BEARER
from tests.fuzz.test_openapi_fuzz import one_problem_shape

pytestmark = pytest.mark.e2e

# What aiohttp's HTTP parser refuses before the gateway's code runs, answered with aiohttp's
# own text/plain 400 (aio-libs/aiohttp#3287; see emulators/gateway.py): a request target or
# field outside RFC 9112 §3.2 / RFC 9110 §5.5, or a line over its 8190-byte limits.
MAX_LINE = 8190
_TARGET = re.compile(r"[\x21-\x7e]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def parser_rejects(method: str, url: str, headers: Mapping[str, str | bytes]) -> bool:
    """Whether aiohttp's parser refuses this request as it goes on the wire."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if not _TARGET.fullmatch(target) or len(f"{method} {target} HTTP/1.1") > MAX_LINE:
        return True
    for name, raw in headers.items():
        value = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        if not (_TOKEN.fullmatch(name) and _FIELD_VALUE.fullmatch(value)):
            return True
        if len(name) + 2 + len(value) > MAX_LINE:
            return True
    return False


@schemathesis.check
def one_problem_shape_behind_the_gateway(ctx: Any, response: Any, case: Any) -> bool | None:
    """``one_problem_shape``, except for exactly the requests aiohttp's parser refuses."""
    sent = response.request
    if response.status_code == 400 and parser_rejects(sent.method, sent.url, sent.headers):
        assert response.headers["content-type"][0].startswith("text/plain"), response.text
        return None
    return one_problem_shape(ctx, response, case)


@pytest.mark.parametrize(
    ("url", "headers", "rejected"),
    [
        ("http://gw/sync-async/job/a%0Ab", {"Accept": "*/*"}, False),
        ("http://gw/x?q=%zz", {"X-A": "caf\xe9"}, False),  # obs-text is a valid field value
        ("http://gw/x", {"X-A": "a\x01b"}, True),
        ("http://gw/x", {"X-A": b"a\x7fb"}, True),
        ("http://gw/x", {"X A": "b"}, True),
        ("http://gw/" + "a" * MAX_LINE, {}, True),
        ("http://gw/x", {"X-A": "a" * MAX_LINE}, True),
        ("http://gw/a b", {}, True),
    ],
)
def test_parser_rejects_exactly_what_breaks_http_syntax_or_limits(
    url: str, headers: dict[str, str | bytes], rejected: bool
) -> None:
    assert parser_rejects("GET", url, headers) is rejected


@pytest.mark.parametrize(
    "service", ["fanout", "sync-async", "ab-router", "async-worker", "prediction-log"]
)
def test_live_function(platform: str, service: str) -> None:
    # A cluster-local Service is fuzzed where the platform's own calls reach it.
    routes = {s["name"]: s for s in httpx.get(f"{platform}/_routes").json()["services"]}
    base = routes[service]["url"]
    headers = BEARER if service == "prediction-log" else None  # past its 401, to the handlers
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 3
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=base,
                headers=headers,
                checks=[not_a_server_error, one_problem_shape_behind_the_gateway],
                timeout=30,
            )

        run()
