"""Shared fixtures: environment isolation, built models, and in-process predictor apps."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from functions.core.runtime import load_predictor
from tests.helpers import MODEL_DIR, predictor_client


def pytest_configure(config: pytest.Config) -> None:
    if not (MODEL_DIR / "iris-svc.onnx").is_file():
        raise pytest.UsageError(f"no models in {MODEL_DIR}: run `make models` (make test does)")


@pytest.fixture(autouse=True)
def _isolate_environment() -> Iterator[None]:
    """functions-framework's create_app changes os.environ, sys.path and sys.modules['main']."""
    environ, path, main = dict(os.environ), list(sys.path), sys.modules.get("main")
    yield
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path
    if main is None:
        sys.modules.pop("main", None)
    else:
        sys.modules["main"] = main


@pytest.fixture(scope="session")
def iris() -> FlaskClient:
    return predictor_client("iris-svc", OUTLIER_MODEL="iris-outlier")


@pytest.fixture(scope="session")
def imagenet() -> FlaskClient:
    return predictor_client("efficientnet-lite0", MODEL_THREADS="2")


@pytest.fixture(scope="session")
def imagenet_tflite() -> FlaskClient:
    return predictor_client("efficientnet-lite0-tflite", MODEL_THREADS="2")


@pytest.fixture(scope="session")
def plant() -> FlaskClient:
    return predictor_client("plant", MODEL_THREADS="2")


@pytest.fixture
def fresh_predictors() -> Iterator[None]:
    """Forget cached predictors, for tests that load models from a tmp_path."""
    load_predictor.cache_clear()
    yield
    load_predictor.cache_clear()
