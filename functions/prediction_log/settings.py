"""Settings of the prediction log's Services (the query API and the ingest share them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from functions.core.settings import (
    REPO_ROOT,
    ApiTokenSettings,
    EventAuthSettings,
    EventSettings,
)
from functions.prediction_log.store import LOG_STORE_SCHEMES

DEFAULT_LOG_STORE = f"sqlite:///{REPO_ROOT / 'build' / 'prediction-log.sqlite3'}"


class PredictionLogSettings(EventSettings, ApiTokenSettings, EventAuthSettings):
    # The store URL may hold a password: no validation error shows the values it was given.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    log_store_url: SecretStr = Field(
        SecretStr(DEFAULT_LOG_STORE),
        description="sqlite:///path or postgresql://user:password@host/db (from a Secret)",
    )
    query_limit: int = Field(1000, ge=1, description="most records one query answers")
    report_limit: int = Field(200_000, ge=1, description="most records an A/B report reads")
    dead_letter_dir: Path = Field(
        REPO_ROOT / "build" / "dead-letters" / "prediction-log",
        description="where the dead-letter Service spools what the ingest did not take",
    )
    dead_letter_replay: bool = Field(
        True, description="replay dead letters into the store as it takes them (else by hand)"
    )

    @field_validator("log_store_url")
    @classmethod
    def _known_store(cls, url: SecretStr) -> SecretStr:
        given = url.get_secret_value()
        if not given.startswith(LOG_STORE_SCHEMES):
            scheme = given.partition(":")[0]  # the rest may hold a password
            raise ValueError(f"must start with {', '.join(LOG_STORE_SCHEMES)}, not {scheme!r}")
        return url
