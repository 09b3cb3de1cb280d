"""Outbound HTTP for functions that call other Services (proxies, workers).

One pooled, keep-alive ``httpx.Client`` per process (per base settings), with a timeout on
every call, forwarding the request id (``X-Request-Id``, so one ``job_id`` ties every hop
together) and W3C ``traceparent`` unchanged. Failures become domain errors: 504 on a
timeout, 503 when the Service cannot be reached.

Knative URLs (``http://<svc>.<ns>.svc.cluster.local``) are the same in every manifest; where
no cluster DNS resolves them (the local platform), ``cluster_local_gateway`` names the
ingress that routes by Host header, as ``knative-local-gateway`` does in a cluster: such calls
are sent there with their original Host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from werkzeug.datastructures import Headers

from functions.core.errors import GatewayTimeout, ServiceUnavailable
from functions.core.http import REQUEST_ID_HEADER

PROPAGATED = ("traceparent", "tracestate")


CLUSTER_LOCAL_SUFFIXES = (".svc.cluster.local", ".svc")


@functools.cache
def pooled_client(
    max_connections: int = 64, cluster_local_gateway: str | None = None
) -> httpx.Client:
    """The process's client: connections are reused across requests (keep-alive).

    With ``cluster_local_gateway`` (the ``CLUSTER_LOCAL_GATEWAY`` setting, which the local
    platform sets), calls to cluster-local hosts go to that gateway, Host header unchanged.
    """
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    hooks = {"request": [_via_gateway(cluster_local_gateway)]} if cluster_local_gateway else {}
    return httpx.Client(limits=limits, timeout=httpx.Timeout(10.0), event_hooks=hooks)


def _via_gateway(gateway: str) -> Callable[[httpx.Request], None]:
    target = httpx.URL(gateway)

    def redirect(request: httpx.Request) -> None:
        if request.url.host.endswith(CLUSTER_LOCAL_SUFFIXES):
            # The Host header was set from the original URL and stays: the gateway routes by it.
            request.url = request.url.copy_with(
                scheme=target.scheme, host=target.host, port=target.port
            )

    return redirect


def trace_context(incoming: Headers | Mapping[str, str]) -> dict[str, str]:
    """The W3C trace context in ``incoming``, unchanged, named in lower case.

    Header names are case-insensitive, and a server hands them over in any case (werkzeug's
    ``dict(request.headers)`` has ``Traceparent``), so they are matched regardless of case."""
    return {name: v for k, v in incoming.items() if (name := k.lower()) in PROPAGATED and v}


def forwarded_headers(
    rid: str, incoming: Headers | Mapping[str, str] | None = None
) -> dict[str, str]:
    """Headers for a call made on behalf of request ``rid`` (and its incoming trace context):
    every proxy builds its outbound headers here."""
    headers = {REQUEST_ID_HEADER: rid}
    if incoming:
        headers.update(trace_context(incoming))
    return headers


def call(
    method: str,
    url: str,
    rid: str,
    *,
    seconds: float,
    incoming: Headers | Mapping[str, str] | None = None,
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
