"""The data of every event type, as pydantic models (one catalog; JSON Schemas come from here)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictionLogData(BaseModel):
    """``prediction.logged.v1``: one prediction a Service answered, successful or not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    service: str = Field(description="the Knative Service (K_SERVICE) that answered")
    model: str
    version: str
    variant: str = Field(description="the serving revision (K_REVISION) or a declared variant")
    endpoint: str
    status: int = Field(description="the HTTP status answered")
    latency_ms: float
    input: Any = Field(None, description="the request's input, or a reference to a large one")
    output: Any = None
    is_outlier: bool | list[bool] | None = None
    outlier_score: float | list[float] | None = None
    error: str | None = Field(None, description="the problem detail of a failed request")
