"""Aggregation of the backends' answers, pure: no HTTP, no threads.

A fan-out yields one ``Outcome`` per backend, in ``BACKENDS`` order: an ``Answer`` (the
backend's JSON body) or a ``Failure`` (status, reason, detail). The proxy answers 200 with
the answers under the backends' names and the failures under ``errors``; when nothing
answered it raises one problem: the backends' own client error when they all refused the
input (e.g. 422 for a wrong feature count), 504 when they all timed out, else 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from functions.core.errors import (
    FunctionError,
    GatewayTimeout,
    ServiceUnavailable,
    error_for_status,
)

# Statuses that say the request was wrong, not the backend: passed on when all agree.
CLIENT_ERRORS = frozenset({400, 413, 415, 422})
ANSWERED_HEADER = "X-Answered"


@dataclass(frozen=True)
class Answer:
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Failure:
    status: int
    reason: str
    detail: str
    problem: Mapping[str, Any] | None = None  # the backend's problem+json body, if any

    def entry(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "detail": self.detail}


Outcome = Answer | Failure


@dataclass(frozen=True)
class Fanned:
    """Every backend's outcome of one fan-out, in ``BACKENDS`` order."""

    outcomes: Mapping[str, Outcome]

    @property
    def answers(self) -> dict[str, Mapping[str, Any]]:
        return {n: o.body for n, o in self.outcomes.items() if isinstance(o, Answer)}

    @property
    def failures(self) -> dict[str, Failure]:
        return {n: o for n, o in self.outcomes.items() if isinstance(o, Failure)}

    def headers(self) -> dict[str, str]:
        return {ANSWERED_HEADER: f"{len(self.answers)}/{len(self.outcomes)}"}

    def errors(self) -> dict[str, Any]:
        """``{"errors": {name: {status, reason, detail}}}`` when some failed, else nothing."""
        failures = self.failures
        return {"errors": {n: f.entry() for n, f in failures.items()}} if failures else {}

    def require_answers(self) -> dict[str, Mapping[str, Any]]:
        """The answers, or the one problem that says why there are none."""
        answers = self.answers
        if not answers:
            raise self._no_answer()
        return answers

    def _no_answer(self) -> FunctionError:
        failures = self.failures
        headers = self.headers()
        first = next(iter(failures.values()))
        if all(f.status == first.status and f.status in CLIENT_ERRORS for f in failures.values()):
            cls = type(error_for_status(first.status, first.detail))
            return cls(first.detail, errors=(first.problem or {}).get("errors"), headers=headers)
        listed = [{"backend": n, **f.entry()} for n, f in failures.items()]
        timeouts = all(f.reason == "timeout" for f in failures.values())
        cls = GatewayTimeout if timeouts else ServiceUnavailable
        return cls(f"none of the {len(failures)} backends answered", errors=listed, headers=headers)


def merged(fanned: Fanned, field: str) -> dict[str, Any]:
    """The seed's shape: ``{name: {field: answer[field]}}`` for each backend that answered."""
    answers = fanned.require_answers()
    return {**{n: {field: body.get(field)} for n, body in answers.items()}, **fanned.errors()}


def metadata(fanned: Fanned) -> dict[str, Any]:
    """The first answer's data description, with every answering backend's prediction sample."""
    answers = fanned.require_answers()
    first = next(iter(answers.values()))
    keys = ("data_type", "data_structure", "data_sample", "prediction_type", "prediction_structure")
    return {
        **{k: first[k] for k in keys if k in first},
        "prediction_sample": {n: body.get("prediction_sample") for n, body in answers.items()},
        **fanned.errors(),
    }


def best_label(fanned: Fanned) -> dict[str, Any]:
    """The backend whose class-0 probability is highest names the label (per row); call it
    on ``with_probabilities(fanned)``."""
    answers = fanned.require_answers()
    rows = {n: _rows(body.get("prediction")) for n, body in answers.items()}
    count = min(len(r) for r in rows.values())
    labels = []
    for i in range(count):
        proba, label = max((r[i][0], n) for n, r in rows.items())
        labels.append({"proba": proba, "label": label})
    prediction: Any = (
        labels[0] if _one_row(next(iter(answers.values())).get("prediction")) else labels
    )
    return {"prediction": prediction, **fanned.errors()}


def _one_row(prediction: Any) -> bool:
    return isinstance(prediction, list) and bool(prediction) and not isinstance(prediction[0], list)


def _rows(prediction: Any) -> list[list[float]]:
    """A backend's probabilities as rows: one row answers ``[p0, p1]``, N rows a list of N."""
    if _one_row(prediction):
        return [[float(p) for p in prediction]]
    if isinstance(prediction, list) and all(isinstance(r, list) and r for r in prediction):
        return [[float(p) for p in r] for r in prediction]
    raise ValueError(f"not class probabilities: {type(prediction).__name__}")


def with_probabilities(fanned: Fanned) -> Fanned:
    """``fanned`` with every answer lacking class probabilities turned into a failure."""
    return Fanned({n: _probabilities(o) for n, o in fanned.outcomes.items()})


def _probabilities(outcome: Outcome) -> Outcome:
    """An answer without class probabilities is a failure of that backend, not of the proxy."""
    if isinstance(outcome, Answer):
        try:
            _rows(outcome.body.get("prediction"))
        except (TypeError, ValueError) as e:
            return Failure(502, "bad-answer", str(e))
    return outcome
