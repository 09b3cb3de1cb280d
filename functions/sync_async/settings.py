"""Settings of the sync-async proxy."""

from __future__ import annotations

from pydantic import Field

from functions.core.settings import EventSettings, JobStoreSettings, ModelSettings


class SyncAsyncSettings(ModelSettings, EventSettings, JobStoreSettings):
    fast_url: str = Field(
        "http://imagenet.ml-serving.svc.cluster.local", description="the fast predictor"
    )
    slow_url: str = Field(
        "http://async-worker.ml-serving.svc.cluster.local", description="the worker (health)"
    )
    fast_model: str = Field("efficientnet-lite0", description="card of the fast model")
    slow_model: str = Field("efficientnet-lite2", description="card the worker serves")
    backend_timeout: float = Field(10.0, gt=0, description="seconds a backend call may take")
    job_deadline_seconds: float = Field(
        300.0, gt=0, description="a job pending longer reads as failed: timed out"
    )
    inline_max_bytes: int = Field(
        128 * 1024, ge=0, description="larger inputs travel as a job store reference"
    )
