"""Settings of the fan-out proxy: which backends it calls, and how long it waits for them."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from functions.core.settings import EventSettings, NameValues

# Keys of the proxy's answers besides the backends' names, so no backend may take them.
RESERVED = frozenset({"job_id", "errors"})
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")


class FanoutSettings(EventSettings):
    backends: NameValues = Field(
        description="name=URL pairs, comma separated: the Knative URLs of the backends"
    )
    backend_timeout: float = Field(
        1.0, gt=0, le=300, description="deadline of each fan-out, in seconds"
    )
    max_connections: int = Field(64, ge=1, le=1024, description="pooled connections, in flight")
    max_batch_rows: int = Field(1024, ge=1, description="rows accepted in one request")

    @field_validator("backends")
    @classmethod
    def _backend_urls(cls, backends: dict[str, str]) -> dict[str, str]:
        for name, url in backends.items():
            if not _NAME.fullmatch(name) or name in RESERVED:
                raise ValueError(
                    f"{name!r} is not a lower-case name other than {', '.join(sorted(RESERVED))}"
                )
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{name}: {url!r} is not an http(s) URL")
        if not backends:
            raise ValueError("name at least one backend")
        return {name: url.rstrip("/") for name, url in backends.items()}
