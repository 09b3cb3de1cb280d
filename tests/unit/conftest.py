"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from functions.core.client import Client


@pytest.fixture
def client() -> Iterator[Client]:
    """An outbound client of the test's own, its connections closed after."""
    made = Client(8)
    yield made
    made.close()
