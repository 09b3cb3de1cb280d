"""Settings of the prediction-log Service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from functions.core.settings import REPO_ROOT, BaseFunctionSettings


class LogSettings(BaseFunctionSettings):
    log_db: Path = Field(
        REPO_ROOT / "build" / "prediction-log.sqlite3", description="SQLite log store"
    )
    query_limit: int = Field(1000, ge=1, description="most records one query answers")
