"""Trigger filters, delivery policies and durations of the local broker, as Knative defines them."""

from __future__ import annotations

from typing import Any

import pytest

from emulators.broker import Delivery, compile_filters, delivery_of

EVENT = {
    "type": "dev.mlserving.inference.requested.v1",
    "source": "/functions/sync-async",
    "jobid": "j1",
}


@pytest.mark.parametrize(
    ("trigger", "matches"),
    [
        ({}, True),  # no filter: everything
        ({"filter": {"attributes": {"type": EVENT["type"]}}}, True),
        ({"filter": {"attributes": {"type": "other"}}}, False),
        ({"filter": {"attributes": {"jobid": ""}}}, True),  # "" matches any value
        ({"filters": [{"exact": {"type": EVENT["type"]}}]}, True),
        (
            {
                "filters": [
                    {"prefix": {"type": "dev.mlserving."}},
                    {"suffix": {"source": "/sync-async"}},
                ]
            },
            True,
        ),
        (
            {"filters": [{"prefix": {"type": "dev.mlserving."}}, {"suffix": {"source": "/other"}}]},
            False,
        ),
        ({"filters": [{"any": [{"exact": {"type": "x"}}, {"exact": {"jobid": "j1"}}]}]}, True),
        ({"filters": [{"all": [{"exact": {"type": "x"}}, {"exact": {"jobid": "j1"}}]}]}, False),
        ({"filters": [{"not": {"exact": {"type": "x"}}}]}, True),
        ({"filters": [{"exact": {"missing": "x"}}]}, False),
        # filters win over filter, as in Knative
        ({"filter": {"attributes": {"type": "x"}}, "filters": [{"exact": {"jobid": "j1"}}]}, True),
    ],
)
def test_filters(trigger: dict[str, Any], matches: bool) -> None:
    assert compile_filters(trigger)(EVENT) is matches


def test_cesql_is_refused_loudly() -> None:
    with pytest.raises(ValueError, match="cesql"):
        compile_filters({"filters": [{"cesql": "type = 'x'"}]})


def test_backoff_schedules() -> None:
    assert [Delivery(backoff_policy="linear", backoff_delay=0.5).backoff(n) for n in (1, 2, 3)] == [
        0.5,
        1.0,
        1.5,
    ]
    assert [Delivery(backoff_delay=0.5).backoff(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_trigger_delivery_overrides_the_broker_one() -> None:
    base = Delivery(retry=5, dead_letter="http://dls")
    merged = delivery_of(
        {"retry": 1, "backoffPolicy": "linear", "backoffDelay": "PT1S"}, str, base, "ns"
    )
    assert merged == Delivery(
        retry=1, backoff_policy="linear", backoff_delay=1.0, dead_letter="http://dls"
    )
