"""Settings of the fan-out proxy: which backends it calls, and how long it waits for them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from functions.core.settings import EventSettings

# Keys of the proxy's answers besides the backends' names, so no backend may take them.
RESERVED = frozenset({"job_id", "errors"})
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")


class FanoutSettings(EventSettings):
    backends: Annotated[dict[str, str], NoDecode] = Field(
        description="name=URL pairs, comma separated: the Knative URLs of the backends"
    )
    backend_timeout: float = Field(
        1.0, gt=0, le=300, description="deadline of each fan-out, in seconds"
    )
    max_connections: int = Field(64, ge=1, le=1024, description="pooled connections, in flight")
    max_batch_rows: int = Field(1024, ge=1, description="rows accepted in one request")

    @field_validator("backends", mode="before")
    @classmethod
    def _pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, url = item.partition("=")
            name, url = name.strip(), url.strip().rstrip("/")
            if not sep or not _NAME.fullmatch(name) or name in RESERVED:
                raise ValueError(
                    f"{item!r} is not name=URL with a lower-case name other than "
                    f"{', '.join(sorted(RESERVED))}"
                )
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{name}: {url!r} is not an http(s) URL")
            if name in pairs:
                raise ValueError(f"backend {name!r} is named twice")
            pairs[name] = url
        if not pairs:
            raise ValueError("name at least one backend")
        return pairs
