"""Schema-driven fuzzing of every endpoint from each function's own /openapi.json
(schemathesis, in-process, a bounded number of examples per operation): never a 5xx, and
every 4xx in the one problem shape. Each test builds its app, so collecting loads nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from functions.core.settings import REPO_ROOT
from tests.helpers import PREDICT_SOURCE, function_client, script_server

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}
EXAMPLES = 15


@schemathesis.check
def one_problem_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx is an RFC 9457 problem+json whose status is the response's."""
    if 400 <= response.status_code < 500:
        content_type = {k.lower(): v for k, v in response.headers.items()}["content-type"][0]
        assert content_type.startswith("application/problem+json"), response.text
        body = response.json()
        assert set(body) >= PROBLEM_KEYS, body
        assert body["status"] == response.status_code
    return None


def fuzz(
    target: str, source: str, env: dict[str, str], headers: dict[str, str] | None = None
) -> int:
    """Build the app as functions-framework does, then fuzz every operation it documents
    (sending ``headers``, e.g. the token, with every case)."""
    with function_client(target, source, **env) as client:
        schema = schemathesis.openapi.from_wsgi("/openapi.json", client.application)
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(
                    headers=headers, checks=[not_a_server_error, one_problem_shape]
                )

            run()
    return len(operations)


def test_tabular_predictor() -> None:
    assert (
        fuzz("predict", PREDICT_SOURCE, {"MODEL_NAME": "iris-svc", "OUTLIER_MODEL": "iris-outlier"})
        >= 15
    )


def test_image_predictor() -> None:
    assert fuzz("predict", PREDICT_SOURCE, {"MODEL_NAME": "plant", "MODEL_THREADS": "2"}) >= 15


def test_prediction_log(tmp_path: Path) -> None:
    """The query API with its token (past the 401, to its handlers), and its ingest."""
    source = str(REPO_ROOT / "functions" / "prediction_log" / "main.py")
    token = "fuzz-token-0123456789"
    env = {
        "LOG_STORE_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
        "DEAD_LETTER_DIR": str(tmp_path / "dead-letters"),
        "API_TOKEN": token,
    }
    assert fuzz("prediction_log", source, env, {"Authorization": f"Bearer {token}"}) == 4
    assert fuzz("prediction_log_ingest", source, env) == 3
    assert fuzz("prediction_log_dead_letter", source, env) == 3


def test_ab_router() -> None:
    """Its variants are echo servers: what is fuzzed is the router's own handling of every
    path, header and body it forwards."""
    with script_server("echo_server.py") as url:
        source = str(REPO_ROOT / "functions" / "ab_router" / "main.py")
        env = {"VARIANTS": f"svc={url},rf={url}", "WEIGHTS": "svc=60,rf=40"}
        assert fuzz("ab_router", source, env) == 3
