"""What the predictor hands the prediction log of each request (``core.recording`` writes the
envelope around it): the input, the answer without what the envelope or its own fields carry,
the label(s) it names, the outlier flags, and how an A/B request reached this variant."""

from __future__ import annotations

from typing import Any

from flask import Request

from functions.core.codecs import Label
from functions.core.recording import Assignment, LogEntry

ASSIGNMENT_HEADER = "X-AB-Assignment"  # set by the ab-test route and the A/B router, never clients
SAMPLE = "sample"  # the input logged by the endpoints that predict the card's sample
_NOT_OUTPUT = ("job_id", "model", "version", "is_outlier", "outlier_score")
_MARKED: dict[str, Assignment] = {"split": "split", "forced": "forced", "sticky": "sticky"}


def assigned(request: Request) -> LogEntry:
    """A request's entry on a Service that serves an A/B route (``ROUTE``): how it got here,
    as the route marks every request it routes (``split`` or ``forced``) and the sticky router
    its own; unmarked, the variant was called directly (``direct``), not through the route."""
    given = request.headers.get(ASSIGNMENT_HEADER, "").lower()
    return LogEntry(assignment=_MARKED.get(given, "direct"))


def answered(entry: LogEntry, body: dict[str, Any], label: Label | None) -> None:
    """Log ``body``, the answer as sent, naming ``label`` (None: an answer that names none)."""
    entry.output = {k: v for k, v in body.items() if k not in _NOT_OUTPUT}
    entry.label = label
    entry.is_outlier = body.get("is_outlier")
    entry.outlier_score = body.get("outlier_score")
