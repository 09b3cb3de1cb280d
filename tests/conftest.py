"""Shared fixtures: environment isolation, built models, and in-process predictor apps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from functions.core.runtime import load_predictor
from tests.helpers import MODEL_DIR, PREDICT_SOURCE, function_client, restoring_environment


def pytest_configure(config: pytest.Config) -> None:
    if not (MODEL_DIR / "iris-svc.onnx").is_file():
        raise pytest.UsageError(f"no models in {MODEL_DIR}: run `make models` (make test does)")


@pytest.fixture(autouse=True)
def _isolate_environment() -> Iterator[None]:
    """What a test changes of os.environ, sys.path and sys.modules['main'] is undone after it."""
    with restoring_environment():
        yield


def predictor(model: str, **env: str) -> Any:
    """A session fixture: a client of the predictor app serving the card ``model``, warm."""

    def client() -> Iterator[FlaskClient]:
        with function_client("predict", PREDICT_SOURCE, MODEL_NAME=model, **env) as built:
            yield built

    return pytest.fixture(scope="session")(client)


iris = predictor("iris-svc", OUTLIER_MODEL="iris-outlier")
imagenet = predictor("efficientnet-lite0", MODEL_THREADS="2")
imagenet_tflite = predictor("efficientnet-lite0-tflite", MODEL_THREADS="2")
plant = predictor("plant", MODEL_THREADS="2")


@pytest.fixture
def fresh_predictors() -> Iterator[None]:
    """Forget cached predictors, for tests that load models from a tmp_path."""
    load_predictor.cache_clear()
    yield
    load_predictor.cache_clear()
