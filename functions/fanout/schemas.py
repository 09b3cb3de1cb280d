"""Request and response models of the fan-out proxy (the seed's shapes)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def rows_request(max_rows: int) -> type[BaseModel]:
    """``{"data": [[...], ...]}``: the backends check the feature count, the proxy the rest."""
    row = Annotated[list[float], Field(min_length=1)]
    rows = Annotated[list[row], Field(min_length=1, max_length=max_rows)]
    model: type[BaseModel] = create_model("RowsRequest", __config__=_STRICT, data=(rows, ...))
    return model


class BackendError(BaseModel):
    """One entry of ``errors``: why a backend gave no answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: int = Field(description="504 timeout, 503 unreachable, else the backend's status")
    reason: str = Field(description="timeout | unavailable | backend-error | bad-answer")
    detail: str


class LabelResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    proba: float
    label: str


class FannedResponse(BaseModel):
    """Any fan-out answer: one entry per backend that answered (``{"prediction": ...}``,
    ``{"health": ...}``), plus ``errors`` naming the ones that did not."""

    model_config = ConfigDict(extra="allow", frozen=True)
    job_id: str
    errors: dict[str, BackendError] | None = None
    __pydantic_extra__: dict[str, dict[str, Any]]


class LabelResponse(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    job_id: str
    prediction: LabelResult | list[LabelResult]
    errors: dict[str, BackendError] | None = None
