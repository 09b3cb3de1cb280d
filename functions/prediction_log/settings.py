"""Settings of the prediction-log Service."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from functions.core.settings import REPO_ROOT, EventSettings


class LogSettings(EventSettings):
    log_store: Literal["sqlite", "postgres"] = Field("sqlite", description="where records live")
    log_dsn: SecretStr | None = Field(None, description="PostgreSQL DSN (from a Secret)")
    log_db: Path = Field(
        REPO_ROOT / "build" / "prediction-log.sqlite3", description="SQLite log store"
    )
    query_limit: int = Field(1000, ge=1, description="most records one query answers")
    report_limit: int = Field(200_000, ge=1, description="most records an A/B report reads")

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> Self:
        if self.log_store == "postgres" and self.log_dsn is None:
            raise ValueError("LOG_STORE=postgres needs LOG_DSN")
        return self
