"""Schema-driven fuzzing of the proxies and the worker, live through the local platform (their
backends must run for an honest answer): never a 5xx, every 4xx in the one problem shape."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.fuzz.test_openapi_fuzz import one_problem_shape

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("service", ["fanout", "sync-async", "async-worker"])
def test_live_function(platform: str, service: str) -> None:
    base = f"{platform}/{service}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 4
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=base, checks=[not_a_server_error, one_problem_shape], timeout=30
            )

        run()
