"""The fan-out proxy's aggregation: partial answers, the best label, the problems of none."""

from __future__ import annotations

from typing import Any

import pytest

from functions.core.errors import (
    FunctionError,
    GatewayTimeout,
    ServiceUnavailable,
    ValidationFailed,
)
from functions.fanout.logic import (
    Answer,
    Failure,
    Fanned,
    Outcome,
    best_label,
    merged,
    metadata,
    with_probabilities,
)

TIMEOUT = Failure(504, "timeout", "no answer within 1s")
DOWN = Failure(503, "unavailable", "http://x is unreachable: ConnectError")


def fanned(**outcomes: Outcome) -> Fanned:
    return Fanned(outcomes)


def predicted(*proba: Any) -> Answer:
    return Answer({"job_id": "j", "model": "m", "version": "1", "prediction": list(proba)})


def test_all_answered_is_the_seeds_shape() -> None:
    f = fanned(setosa=predicted(0.9, 0.1), virginica=predicted(0.2, 0.8))
    assert merged(f, "prediction") == {
        "setosa": {"prediction": [0.9, 0.1]},
        "virginica": {"prediction": [0.2, 0.8]},
    }
    assert f.headers() == {"X-Answered": "2/2"}


def test_failures_are_listed_under_errors_beside_the_answers() -> None:
    f = fanned(setosa=predicted(0.9, 0.1), versicolor=TIMEOUT, virginica=DOWN)
    assert merged(f, "prediction") == {
        "setosa": {"prediction": [0.9, 0.1]},
        "errors": {
            "versicolor": {"status": 504, "reason": "timeout", "detail": "no answer within 1s"},
            "virginica": {"status": 503, "reason": "unavailable", "detail": DOWN.detail},
        },
    }
    assert f.headers() == {"X-Answered": "1/3"}


def test_best_label_is_the_highest_class_0_probability_among_those_that_answered() -> None:
    f = fanned(setosa=predicted(0.3, 0.7), versicolor=predicted(0.05, 0.95), virginica=TIMEOUT)
    body = best_label(with_probabilities(f))
    assert body["prediction"] == {"proba": 0.3, "label": "setosa"}
    assert body["errors"]["virginica"]["reason"] == "timeout"


def test_best_label_per_row() -> None:
    f = fanned(a=predicted([0.9, 0.1], [0.1, 0.9]), b=predicted([0.2, 0.8], [0.6, 0.4]))
    assert best_label(with_probabilities(f))["prediction"] == [
        {"proba": 0.9, "label": "a"},
        {"proba": 0.6, "label": "b"},
    ]


def test_an_answer_without_probabilities_is_that_backends_failure() -> None:
    f = with_probabilities(fanned(a=predicted(0.9, 0.1), b=Answer({"prediction": "cat"})))
    assert f.headers() == {"X-Answered": "1/2"}
    assert best_label(f)["errors"]["b"]["reason"] == "bad-answer"


def test_metadata_lists_every_prediction_sample() -> None:
    meta = {"data_type": "float32", "data_sample": [[5.1, 3.5, 1.4, 0.2]]}
    f = fanned(
        a=Answer({**meta, "prediction_sample": [0.9, 0.1]}),
        b=Answer({**meta, "prediction_sample": [0.2, 0.8]}),
        c=DOWN,
    )
    body = metadata(f)
    assert body["data_sample"] == [[5.1, 3.5, 1.4, 0.2]]
    assert body["prediction_sample"] == {"a": [0.9, 0.1], "b": [0.2, 0.8]}
    assert set(body["errors"]) == {"c"}


def raised(f: Fanned) -> FunctionError:
    with pytest.raises(FunctionError) as info:
        merged(f, "prediction")
    return info.value


def test_none_answered_is_503_with_every_reason() -> None:
    error = raised(fanned(a=TIMEOUT, b=DOWN))
    assert isinstance(error, ServiceUnavailable)
    assert error.errors == [
        {"backend": "a", **TIMEOUT.entry()},
        {"backend": "b", **DOWN.entry()},
    ]
    assert error.headers == {"X-Answered": "0/2"}


def test_all_timed_out_is_504() -> None:
    assert isinstance(raised(fanned(a=TIMEOUT, b=TIMEOUT)), GatewayTimeout)


def test_input_every_backend_refused_is_their_client_error() -> None:
    problem = {"status": 422, "detail": "1 validation error", "errors": [{"loc": ["data", 0]}]}
    refused = Failure(422, "backend-error", "1 validation error", problem)
    error = raised(fanned(a=refused, b=refused))
    assert isinstance(error, ValidationFailed)
    assert error.errors == [{"loc": ["data", 0]}]


def test_a_client_error_beside_an_outage_is_still_an_outage() -> None:
    refused = Failure(422, "backend-error", "bad", {"status": 422})
    assert isinstance(raised(fanned(a=refused, b=DOWN)), ServiceUnavailable)
