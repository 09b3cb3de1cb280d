"""Sticky assignment: stable per key, shares following the weights over many keys."""

from __future__ import annotations

import math
from collections import Counter

from functions.ab_router.logic import assign, bucket

WEIGHTS = [("svc", 60), ("rf", 40)]


def test_a_key_always_gets_the_same_variant() -> None:
    for key in ("alice", "bob", "u-1", ""):
        assert len({assign(key, WEIGHTS) for _ in range(200)}) == 1


def test_shares_follow_the_weights_over_many_keys() -> None:
    n = 20000
    counts = Counter(assign(f"user-{i}", WEIGHTS) for i in range(n))
    assert abs(counts["svc"] - 0.6 * n) <= 4.5 * math.sqrt(n * 0.6 * 0.4)


def test_buckets_are_uniform() -> None:
    points = [bucket(f"k{i}") for i in range(10000)]
    assert 0 <= min(points) < 1
    assert 99 < max(points) < 100
    assert abs(sum(p < 50 for p in points) - 5000) < 4.5 * 50


def test_a_zero_weight_variant_gets_nobody() -> None:
    assert {assign(f"u{i}", [("svc", 100), ("rf", 0)]) for i in range(500)} == {"svc"}
