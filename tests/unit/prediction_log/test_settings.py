"""LOG_STORE_URL: the store to open, a secret no message or repr shows."""

from __future__ import annotations

import pytest

from functions.core.settings import REPO_ROOT, SettingsError, build_settings
from functions.prediction_log.settings import PredictionLogSettings

SECRET_URL = "postgresql://app:s3cret@db.ml-serving.svc.cluster.local/logs"


def test_the_default_store_is_the_sqlite_file_in_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_STORE_URL", raising=False)
    url = build_settings(PredictionLogSettings).log_store_url.get_secret_value()
    assert url == f"sqlite:///{REPO_ROOT / 'build' / 'prediction-log.sqlite3'}"


def test_the_url_is_read_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_STORE_URL", SECRET_URL)
    settings = build_settings(PredictionLogSettings)
    assert settings.log_store_url.get_secret_value() == SECRET_URL
    assert "s3cret" not in repr(settings) + str(settings)


def test_an_unknown_store_stops_the_process_without_showing_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_STORE_URL", "mysql://app:s3cret@db/logs")
    with pytest.raises(SettingsError, match="LOG_STORE_URL.*'mysql'") as refused:
        build_settings(PredictionLogSettings)
    assert "s3cret" not in str(refused.value) + str(refused.value.__cause__)
