"""Outbound HTTP for functions that call other Services (proxies, workers).

One pooled, keep-alive ``httpx.Client`` per process (per base settings), with a timeout on
every call, forwarding the request id (``X-Request-Id``, so one ``job_id`` ties every hop
together) and W3C ``traceparent`` unchanged. Failures become domain errors: 504 on a
timeout, 503 when the Service cannot be reached.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import httpx

from functions.core.errors import GatewayTimeout, ServiceUnavailable
from functions.core.http import REQUEST_ID_HEADER

PROPAGATED = ("traceparent", "tracestate")


@functools.cache
def pooled_client(max_connections: int = 64) -> httpx.Client:
    """The process's client: connections are reused across requests (keep-alive)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.Client(limits=limits, timeout=httpx.Timeout(10.0))


def forwarded_headers(rid: str, incoming: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for a call made on behalf of request ``rid`` (and its incoming trace context)."""
    headers = {REQUEST_ID_HEADER: rid}
    if incoming:
        headers.update({k: v for k in PROPAGATED if (v := incoming.get(k))})
    return headers


def call(
    method: str,
    url: str,
    rid: str,
    *,
    seconds: float,
    incoming: Mapping[str, str] | None = None,
    json: Any = None,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """One outbound call with a deadline; transport failures become 503/504 problems."""
    try:
        return (client or pooled_client()).request(
            method, url, json=json, headers=forwarded_headers(rid, incoming), timeout=seconds
        )
    except httpx.TimeoutException as e:
        raise GatewayTimeout(f"{url} did not answer within {seconds:g}s") from e
    except httpx.TransportError as e:
        raise ServiceUnavailable(f"{url} is unreachable: {type(e).__name__}") from e
