"""A/B figures and a verdict, over the prediction log of one route.

Requests that called a variant directly (``assignment`` ``direct``), not through the route,
are left out of every figure; the report counts them (``direct``). Per variant: requests, errors, forced requests, latency p50/p95/p99, the label distribution
and — where ground truth came back through ``POST /feedback`` — accuracy with a 95 % Wilson
interval. The verdict compares the two variants' accuracy with a two-proportion z-test
(pooled; the same p-value as a chi-square test of the 2x2 table without continuity
correction) over requests that were not forced, and says when there is not yet enough data
to decide (fewer than ``MIN_LABELLED`` labelled predictions per variant).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal
MIN_LABELLED = 30
ALPHA = 0.05


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def wilson(correct: int, n: int) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of a proportion (sound for small n and p near 0 or 1)."""
    if n == 0:
        return None
    p = correct / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z(correct_a: int, n_a: int, correct_b: int, n_b: int) -> tuple[float, float]:
    """(z, two-sided p) for H0: the two accuracies are equal (pooled standard error)."""
    pooled = (correct_a + correct_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 0.0, 1.0
    z = (correct_a / n_a - correct_b / n_b) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def report(route: str, records: list[dict[str, Any]], truth: dict[str, str]) -> dict[str, Any]:
    """The figures per variant and the verdict; ``truth`` maps job ids to their true label."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    direct = 0
    for record in records:
        if record.get("assignment") == "direct":
            direct += 1
            continue
        by_variant.setdefault(str(record["variant"]), []).append(record)
    variants = {name: _figures(rows, truth) for name, rows in sorted(by_variant.items())}
    return {"route": route, "direct": direct, "variants": variants, "verdict": _verdict(variants)}


def _figures(rows: list[dict[str, Any]], truth: dict[str, str]) -> dict[str, Any]:
    latencies = [float(r["latency_ms"]) for r in rows]
    labels = Counter(str(r["label"]) for r in rows if isinstance(r.get("label"), str))
    # Accuracy counts one-row predictions that are not forced and have a true label.
    judged = [
        r
        for r in rows
        if r.get("assignment") != "forced"
        and r["job_id"] in truth
        and isinstance(r.get("label"), str)
    ]
    correct = sum(r["label"] == truth[r["job_id"]] for r in judged)
    interval = wilson(correct, len(judged))
    return {
        "requests": len(rows),
        "errors": sum(int(r["status"]) >= 400 for r in rows),
        "forced": sum(r.get("assignment") == "forced" for r in rows),
        "latency_ms": {f"p{q}": percentile(latencies, q) for q in (50, 95, 99)},
        "labels": dict(labels.most_common()),
        "labelled": len(judged),
        "correct": correct,
        "accuracy": correct / len(judged) if judged else None,
        "accuracy_ci95": list(interval) if interval else None,
    }


def _verdict(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if len(variants) != 2:
        return {
            "decided": False,
            "reason": f"a verdict compares 2 variants; the log has {len(variants)}",
        }
    (name_a, a), (name_b, b) = variants.items()
    short = [n for n, v in variants.items() if v["labelled"] < MIN_LABELLED]
    if short:
        return {
            "decided": False,
            "reason": f"not enough data yet: {', '.join(short)} has fewer than {MIN_LABELLED} labelled predictions",
        }
    z, p = two_proportion_z(a["correct"], a["labelled"], b["correct"], b["labelled"])
    better = name_a if z > 0 else name_b
    significant = p < ALPHA
    return {
        "decided": significant,
        "test": "two-proportion z-test (pooled), two-sided",
        "z": z,
        "p_value": p,
        "better": better if significant else None,
        "reason": f"{better} is more accurate (p = {p:.3g})"
        if significant
        else f"no significant difference (p = {p:.3g} >= {ALPHA})",
    }
