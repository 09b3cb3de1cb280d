"""Settings of the predictor function (environment variables, validated at start-up)."""

from __future__ import annotations

from pydantic import Field

from functions.core.settings import EventSettings, ModelSettings


class PredictSettings(ModelSettings, EventSettings):
    model_name: str = Field(description="card name under models/, e.g. iris-svc")
    outlier_model: str | None = Field(None, description="card of an outlier detector to run too")
    model_threads: int = Field(1, ge=1, le=64, description="intra-op threads of the runtime")
    max_batch_rows: int = Field(1024, ge=1, description="rows accepted in one request")
    top_k: int = Field(5, ge=1, le=100, description="labels listed by an image prediction")
