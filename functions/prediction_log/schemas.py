"""Query parameters of ``GET /logs`` (validated like any request body)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LogsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str | None = None
    model: str | None = None
    variant: str | None = None
    route: str | None = None
    outlier: bool | None = None
    since: datetime | None = Field(None, description="ISO-8601; without a zone, UTC")
    until: datetime | None = None
    limit: int = Field(100, ge=1)

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class LogsResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    records: list[dict[str, Any]]


class FeedbackRequest(BaseModel):
    """The true label of a job, when it becomes known."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    job_id: str = Field(min_length=1, max_length=128)
    label: str = Field(min_length=1, max_length=256)


class ReportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    route: str = Field(min_length=1, description="the route whose variants to compare")
