"""Prometheus metrics per model, correct across several worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``serve.py`` sets it before the workers start),
prometheus-client writes every sample to a shared mmap directory and ``/metrics`` merges
all workers; otherwise the process-local registry is exposed.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

_LABELS = ("model", "version", "endpoint")
# Sub-millisecond buckets: an iris prediction is ~0.1 ms, an image one ~10 ms.
_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter("mlf_requests_total", "HTTP requests answered", (*_LABELS, "code"))
ERRORS = Counter(
    "mlf_request_errors_total", "HTTP requests answered with 4xx/5xx", (*_LABELS, "code")
)
LATENCY = Histogram("mlf_request_duration_seconds", "Time to answer", _LABELS, buckets=_BUCKETS)


@functools.cache
def _children(model: str, version: str, endpoint: str, status: int) -> tuple[Any, Any, Any]:
    """The labelled series of one (model, endpoint, status): looked up once, not per request."""
    code = str(status)
    errors = ERRORS.labels(model, version, endpoint, code) if status >= 400 else None
    return (
        REQUESTS.labels(model, version, endpoint, code),
        errors,
        LATENCY.labels(model, version, endpoint),
    )


def observe_request(model: str, version: str, endpoint: str, status: int, seconds: float) -> None:
    requests, errors, latency = _children(model, version, endpoint, status)
    requests.inc()
    if errors is not None:
        errors.inc()
    latency.observe(seconds)


def exposition(multiproc_dir: Path | None) -> tuple[bytes, str]:
    """The text exposition of every metric, merged over workers in multiprocess mode."""
    if multiproc_dir is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
