"""The JSON depth bound of ``core.events.parse``: deep nesting is a 400 naming the limit,
before the SDK's stdlib ``json`` recurses into it (a RecursionError, a 500)."""

from __future__ import annotations

import orjson
import pytest

from functions.core import events
from functions.core.errors import BadRequest
from functions.core.events import MAX_DEPTH, check_depth

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,  # the reproduction: never closed
        nested(MAX_DEPTH + 1),
        b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
        b"[" * 40 + b"}" + b"[" * 40,  # mismatched, deep all the same
    ],
)
def test_deeper_than_the_limit_is_a_400_naming_it(body: bytes) -> None:
    with pytest.raises(BadRequest, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_depth(body)


@pytest.mark.parametrize(
    "body",
    [
        nested(MAX_DEPTH),
        b"[]" * 1000,  # many brackets, shallow
        b'"' + b"[" * 1000 + b'"',  # brackets in a string do not count
        b'["\\"[[[[", ' + nested(MAX_DEPTH - 1) + b"]",  # nor after an escaped quote
        orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]] * 500}),
    ],
)
def test_up_to_the_limit_passes(body: bytes) -> None:
    check_depth(body)


def test_parse_refuses_a_deep_structured_event_and_reads_a_normal_one() -> None:
    deep = b'{"specversion": "1.0", "id": "1", "source": "/x", "type": "t", "data": ' + (
        b"[" * 100_000
    )
    with pytest.raises(BadRequest, match=str(MAX_DEPTH)):
        events.parse(STRUCTURED, deep)
    event = orjson.dumps(
        {"specversion": "1.0", "id": "1", "source": "/x", "type": "t", "data": [[1]]}
    )
    assert events.parse(STRUCTURED, event).data == [[1]]


def test_binary_mode_json_data_is_bounded_and_text_data_is_not() -> None:
    binary = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/x", "ce-type": "t"}
    with pytest.raises(BadRequest, match=str(MAX_DEPTH)):
        events.parse({**binary, "Content-Type": "application/json"}, b"[" * 100_000)
    text = events.parse({**binary, "Content-Type": "text/plain"}, b"[" * 100)
    assert text.data == b"[" * 100
