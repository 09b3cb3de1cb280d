"""Durations as the manifests write them: Go's (Istio's ``timeout: 1.5s``, Knative's
autoscaling windows) and ISO-8601's (Knative Eventing's ``backoffDelay: PT0.2S``).

``go_duration`` and ``iso_duration`` give the seconds, or None where the text is no such
duration: what the validator reports. ``go_seconds`` and ``iso_seconds`` are for the emulators,
which read manifests at run time: they raise ValueError instead, also for a negative duration,
which no timeout, delay or backoff can be.
"""

from __future__ import annotations

import re
from typing import Any

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_GO_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
_GO_DURATION = re.compile(rf"[-+]?(?:{_GO_PART})+")
_NUM = r"(\d+(?:[.,]\d+)?)"
_ISO_DURATION = re.compile(
    rf"(-)?P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?"
)
_ISO_SECONDS = (365 * 86400, 30 * 86400, 7 * 86400, 86400, 3600, 60, 1)


def go_duration(text: Any) -> float | None:
    """Seconds in a Go duration (``1.5s``, ``300ms``, ``1h2m``); None where Go would refuse it."""
    if not isinstance(text, str):
        return None
    if text.lstrip("-+") == "0":
        return 0.0
    if not _GO_DURATION.fullmatch(text):
        return None
    seconds = sum(float(n) * _GO_UNITS[unit] for n, unit in re.findall(_GO_PART, text))
    return -seconds if text.startswith("-") else seconds


def iso_duration(text: Any) -> float | None:
    """Seconds in an ISO-8601 duration (``PT1S``, ``P1DT2H``); None if it is not one."""
    if not isinstance(text, str):
        return None
    match = _ISO_DURATION.fullmatch(text)
    if match is None or text.endswith(("P", "T")):
        return None
    numbers = [float(n.replace(",", ".")) if n else 0.0 for n in match.groups()[1:]]
    seconds = sum(n * unit for n, unit in zip(numbers, _ISO_SECONDS, strict=True))
    return -seconds if match[1] else seconds


def go_seconds(text: str) -> float:
    """``go_duration``, or ValueError where it is none or negative."""
    return _non_negative(go_duration(text), text, "a Go duration")


def iso_seconds(text: str) -> float:
    """``iso_duration``, or ValueError where it is none or negative."""
    return _non_negative(iso_duration(text), text, "an ISO-8601 duration")


def _non_negative(seconds: float | None, text: str, what: str) -> float:
    if seconds is None or seconds < 0:
        raise ValueError(f"not {what} of zero or more: {text!r}")
    return seconds
