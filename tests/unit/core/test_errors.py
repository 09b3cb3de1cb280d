"""The one status-to-error mapping: declared classes, and every other status kept as sent."""

from __future__ import annotations

import pytest

from functions.core.errors import (
    PROBLEM_TYPE_PREFIX,
    FunctionError,
    GatewayTimeout,
    NotFound,
    error_for_status,
    problem_body,
)


def test_a_declared_status_is_its_class() -> None:
    assert type(error_for_status(404, "x")) is NotFound
    assert type(error_for_status(504, "x")) is GatewayTimeout
    assert type(error_for_status(500, "x")) is FunctionError


@pytest.mark.parametrize(
    ("status", "title"),
    [(429, "Too Many Requests"), (502, "Bad Gateway"), (418, "I'm a Teapot"), (599, "HTTP error")],
)
def test_an_undeclared_status_is_kept_with_its_reason_phrase(status: int, title: str) -> None:
    error = error_for_status(status, "slow down")
    assert (error.status, error.title, error.detail) == (status, title, "slow down")
    body = problem_body(error, "rid")
    assert (body["status"], body["title"]) == (status, title)
    assert body["type"] == f"{PROBLEM_TYPE_PREFIX}http-{status}"


def test_one_class_per_undeclared_status() -> None:
    assert type(error_for_status(429, "a")) is type(error_for_status(429, "b"))
    assert isinstance(error_for_status(429, "a"), FunctionError)
