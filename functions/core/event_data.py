"""The data of every event type, as pydantic models: what each CloudEvent carries (the sink and
the subscribers validate it; the JSON Schemas of the OpenAPI documents come from here)."""

from __future__ import annotations

from typing import Any, Literal

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
    label: str | list[str] | None = Field(None, description="the top label (one per row)")
    route: str | None = Field(None, description="the route served, for A/B analysis")
    assignment: Literal["split", "forced", "sticky", "direct"] | None = Field(
        None,
        description="how a request reached this variant of an A/B route: through the route "
        "(split, forced: out of verdicts; sticky), or direct, a call of the variant itself "
        "(out of every A/B figure)",
    )


class InferenceRequestedData(BaseModel):
    """``inference.requested.v1``: run the slow model on this input for job ``job_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    image_data: str | None = Field(None, description="the base64 image, when small enough")
    image_ref: str | None = Field(None, description="the job store's blob key of a large one")


class InferenceCompletedData(BaseModel):
    """``inference.completed.v1``: the worker's result for job ``job_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    model: str
    prediction: str
    proba: float
