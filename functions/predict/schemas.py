"""Response models of the predictor (the seeds' shapes, plus model and version); its request
models are its codecs' (``core.codecs``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelResult(_Frozen):
    label: str
    proba: float


class Prediction(_Frozen):
    """What ``/predict`` answers. One row: the seeds' shape; N rows: a list of N per field."""

    job_id: str
    model: str
    version: str
    prediction: Any = Field(description="probabilities (tabular) or the top label (image)")
    mode: str | None = Field(None, description="the A/B variant that answered, when it is one")
    proba: float | None = None
    top_k: list[LabelResult] | None = None
    is_outlier: bool | list[bool] | None = None
    outlier_score: float | list[float] | None = None


class LabelPrediction(_Frozen):
    """What ``/predict/label`` answers: ``prediction`` is one result, or a list of N."""

    job_id: str
    model: str
    version: str
    prediction: LabelResult | list[LabelResult]
    mode: str | None = None
