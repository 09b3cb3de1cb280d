"""The A/B statistics, against textbook and scipy values, and a report counted by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from functions.prediction_log.ab_report import percentile, report, two_proportion_z, wilson


def test_percentiles_match_numpy() -> None:
    values = [0.3, 1.2, 0.8, 5.0, 2.2, 0.9, 1.1]
    for q in (50, 95, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) is None


def test_wilson_interval_textbook_value() -> None:
    # 81 successes of 263 trials: Wilson 95 % interval [0.2553, 0.3662] (Newcombe 1998, table I).
    low, high = wilson(81, 263)  # type: ignore[misc]
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson(0, 0) is None


@pytest.mark.parametrize(
    ("a", "n_a", "b", "n_b"), [(45, 60, 30, 55), (90, 100, 88, 100), (10, 40, 25, 40)]
)
def test_z_test_agrees_with_scipy(a: int, n_a: int, b: int, n_b: int) -> None:
    z, p = two_proportion_z(a, n_a, b, n_b)
    chi2, p_scipy, _, _ = chi2_contingency([[a, n_a - a], [b, n_b - b]], correction=False)
    assert z**2 == pytest.approx(chi2)
    assert p == pytest.approx(p_scipy)


def rec(
    job: str, variant: str, label: str, ms: float, status: int = 200, assignment: str = "split"
) -> dict[str, Any]:
    return {
        "job_id": job,
        "variant": variant,
        "label": label,
        "latency_ms": ms,
        "status": status,
        "assignment": assignment,
    }


def test_report_matches_a_hand_count() -> None:
    records = [
        rec("1", "svc", "setosa", 1.0),
        rec("2", "svc", "setosa", 2.0),
        rec("3", "svc", "virginica", 3.0),
        rec("4", "svc", "setosa", 4.0, assignment="forced"),
        rec("5", "rf", "versicolor", 10.0),
        rec("6", "rf", "setosa", 20.0, status=422),
    ]
    truth = {"1": "setosa", "2": "virginica", "3": "virginica", "4": "setosa", "5": "versicolor"}
    out = report("ab-test", records, truth)
    svc, rf = out["variants"]["svc"], out["variants"]["rf"]
    assert (svc["requests"], svc["errors"], svc["forced"]) == (4, 0, 1)
    assert svc["labels"] == {"setosa": 3, "virginica": 1}
    assert (svc["labelled"], svc["correct"]) == (3, 2)  # job 4 was forced: out of the verdict
    assert svc["accuracy"] == pytest.approx(2 / 3)
    assert svc["latency_ms"]["p50"] == pytest.approx(2.5)
    assert (rf["requests"], rf["errors"], rf["labelled"], rf["correct"]) == (2, 1, 1, 1)
    assert out["verdict"]["decided"] is False
    assert "not enough data" in out["verdict"]["reason"]
    assert out["direct"] == 0


def test_direct_calls_of_a_variant_are_left_out_of_every_figure() -> None:
    """A variant called directly, not through the route, was counted as split traffic."""
    records = [
        rec("1", "svc", "setosa", 1.0),
        rec("2", "svc", "virginica", 500.0, status=500, assignment="direct"),
        rec("3", "rf", "setosa", 2.0, assignment="sticky"),
        rec("4", "rf", "setosa", 900.0, assignment="direct"),
        rec("5", "other", "setosa", 9.0, assignment="direct"),  # only ever called directly
    ]
    out = report("ab-test", records, {"1": "setosa", "2": "virginica", "4": "setosa"})
    assert out["direct"] == 3
    assert set(out["variants"]) == {"svc", "rf"}
    svc, rf = out["variants"]["svc"], out["variants"]["rf"]
    assert (svc["requests"], svc["errors"], svc["labelled"], svc["latency_ms"]["p99"]) == (
        1,
        0,
        1,
        1.0,
    )
    assert (rf["requests"], rf["labelled"], rf["latency_ms"]["p99"]) == (1, 0, 2.0)


def test_a_clear_difference_is_decided() -> None:
    records = [rec(f"a{i}", "svc", "x", 1.0) for i in range(100)] + [
        rec(f"b{i}", "rf", "x", 1.0) for i in range(100)
    ]
    truth = {f"a{i}": "x" for i in range(95)} | {f"b{i}": "x" for i in range(60)}
    verdict = report(
        "r",
        records,
        truth | {f"a{i}": "y" for i in range(95, 100)} | {f"b{i}": "y" for i in range(60, 100)},
    )["verdict"]
    assert verdict["decided"] is True
    assert verdict["better"] == "svc"
    assert verdict["p_value"] < 0.001
