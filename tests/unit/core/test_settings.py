"""Settings: a bad value stops the process with a message that names the variable."""

from __future__ import annotations

import pytest

from functions.core.settings import SettingsError, build_settings
from functions.predict.settings import PredictSettings


def test_bad_values_name_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_NAME", "iris-svc")
    monkeypatch.setenv("MODEL_THREADS", "zero")
    monkeypatch.setenv("MAX_BODY_BYTES", "-1")
    with pytest.raises(
        SettingsError, match="MODEL_THREADS.*MAX_BODY_BYTES|MAX_BODY_BYTES.*MODEL_THREADS"
    ):
        build_settings(PredictSettings)


def test_missing_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_NAME", raising=False)
    with pytest.raises(SettingsError, match="MODEL_NAME"):
        build_settings(PredictSettings)


def test_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_NAME", "iris-rf")
    monkeypatch.setenv("MODEL_THREADS", "2")
    settings = build_settings(PredictSettings)
    assert (settings.model_name, settings.model_threads) == ("iris-rf", 2)
