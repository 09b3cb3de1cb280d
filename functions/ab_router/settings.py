"""Settings of the A/B router: the variants, their weights, where each is served."""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from functions.core.settings import BaseFunctionSettings


def pairs(text: str) -> dict[str, str]:
    """``a=x,b=y`` -> ``{"a": "x", "b": "y"}``."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"expected name=value, got {item!r}")
        out[name.strip()] = value.strip()
    return out


class RouterSettings(BaseFunctionSettings):
    variants: str = Field(description="name=URL of each variant's Knative Service, comma-separated")
    weights: str = Field(description="name=percent, comma-separated; the same as the route's")
    user_header: str = Field("X-User-Id", description="the header carrying the user key")
    deadline_seconds: float = Field(10.0, gt=0, description="per forwarded call")

    @field_validator("variants", "weights")
    @classmethod
    def _pairs(cls, value: str) -> str:
        pairs(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        urls, weights = pairs(self.variants), pairs(self.weights)
        if set(urls) != set(weights):
            raise ValueError(f"VARIANTS names {sorted(urls)} but WEIGHTS names {sorted(weights)}")
        if sum(int(w) for w in weights.values()) != 100:
            raise ValueError(
                f"WEIGHTS must sum to 100, not {sum(int(w) for w in weights.values())}"
            )
        return self
