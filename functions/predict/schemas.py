"""Request and response models of the predictor (the seeds' shapes, plus model and version)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

FLOAT32_MAX = 3.4028234663852886e38
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def tabular_request(n_features: int, max_rows: int) -> type[BaseModel]:
    """``{"data": [[f1..fn], ...]}`` with the card's feature count and the row limit."""
    feature = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]  # the models take float32
    row = Annotated[list[feature], Field(min_length=n_features, max_length=n_features)]
    rows = Annotated[list[row], Field(min_length=1, max_length=max_rows)]
    model: type[BaseModel] = create_model("TabularRequest", __config__=_STRICT, data=(rows, ...))
    return model


class ImageRequest(BaseModel):
    """``{"image_data": "<base64>"}``; line breaks in the base64 are accepted."""

    model_config = _STRICT
    image_data: str = Field(min_length=1)


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
