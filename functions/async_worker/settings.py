"""Settings of the async worker."""

from __future__ import annotations

from pydantic import Field

from functions.core.settings import REPO_ROOT, BaseFunctionSettings

DEFAULT_STORE = f"sqlite:///{REPO_ROOT / 'build' / 'jobs.sqlite3'}"


class WorkerSettings(BaseFunctionSettings):
    model_name: str = Field("efficientnet-lite2", description="card of the slow model")
    model_threads: int = Field(1, ge=1, le=64, description="intra-op threads of the runtime")
    job_store_url: str = Field(DEFAULT_STORE, description="sqlite:///path or redis://host/db")
    job_ttl_seconds: float = Field(86400.0, gt=0, description="how long jobs are kept")
