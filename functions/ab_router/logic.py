"""Sticky assignment: a user key hashes to a point in [0, 100) and the variants' weights
cut that interval in the declared order, so a key always lands on the same variant while
over many keys the shares follow the weights (and a weight change moves only the keys at
the boundary)."""

from __future__ import annotations

import hashlib


def bucket(key: str) -> float:
    """A stable, uniform point in [0, 100) for ``key`` (the same in every process)."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def assign(key: str, weights: list[tuple[str, int]]) -> str:
    point = bucket(key)
    for name, weight in weights:
        if point < weight:
            return name
        point -= weight
    return weights[-1][0]
