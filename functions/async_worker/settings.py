"""Settings of the async worker."""

from __future__ import annotations

from pydantic import Field

from functions.core.settings import (
    EventAuthSettings,
    EventSettings,
    JobStoreSettings,
    ModelSettings,
)


class AsyncWorkerSettings(ModelSettings, EventSettings, JobStoreSettings, EventAuthSettings):
    model_name: str = Field("efficientnet-lite2", description="card of the slow model")
    model_threads: int = Field(1, ge=1, le=64, description="intra-op threads of the runtime")
