"""Request models of the sync-async proxy (the seed's ``{"image_data": ...}``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ImageRequest(BaseModel):
    """``{"image_data": "<base64>"}``; line breaks in the base64 are accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    image_data: str = Field(min_length=1)
