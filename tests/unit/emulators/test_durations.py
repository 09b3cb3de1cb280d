"""emulators.durations: Go and ISO-8601 durations, lenient for the validator (None), strict
for the emulators (ValueError, negatives included)."""

from __future__ import annotations

import pytest

from emulators.durations import go_duration, go_seconds, iso_duration, iso_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0), ("300ms", 0.3), ("1.5s", 1.5), ("1m30s", 90.0), ("1h2m", 3720), ("0", 0),
        ("-1s", -1.0), ("1.5 s", None), ("300", None), ("", None), ("5 seconds", None),
        ("PT5S", None), (5, None),
    ],
)  # fmt: skip
def test_go_duration(text: str, seconds: float | None) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT0.2S", 0.2), ("PT1M", 60), ("PT1H30M", 5400), ("P1D", 86400), ("P1DT1H", 90000),
        ("-PT1S", -1.0), ("PT", None), ("P", None), ("1s", None), ("5 seconds", None),
        ("PT-1S", None),
    ],
)  # fmt: skip
def test_iso_duration(text: str, seconds: float | None) -> None:
    assert iso_duration(text) == pytest.approx(seconds)


def test_the_strict_forms_give_seconds() -> None:
    assert go_seconds("1m30s") == 90.0
    assert iso_seconds("PT0.2S") == pytest.approx(0.2)


@pytest.mark.parametrize("text", ["", "5", "5 seconds", "PT5S", "-1s"])
def test_go_seconds_refuses_what_is_no_timeout(text: str) -> None:
    with pytest.raises(ValueError, match="not a Go duration"):
        go_seconds(text)


@pytest.mark.parametrize("text", ["1s", "PT", "P", "5 seconds", "PT-1S", "-PT1S"])
def test_iso_seconds_refuses_what_is_no_delay(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO-8601 duration"):
        iso_seconds(text)
