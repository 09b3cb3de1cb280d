"""Settings of the A/B router: the variants, their weights, where each is served."""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from functions.core.settings import BaseFunctionSettings, NameValues


class AbRouterSettings(BaseFunctionSettings):
    variants: NameValues = Field(
        description="name=URL of each variant's Knative Service, comma-separated"
    )
    weights: NameValues = Field(
        description="name=percent, comma-separated; the same as the route's"
    )
    user_header: str = Field("X-User-Id", description="the header carrying the user key")
    deadline_seconds: float = Field(10.0, gt=0, description="per forwarded call")

    @field_validator("weights")
    @classmethod
    def _whole_percents(cls, weights: dict[str, str]) -> dict[str, str]:
        for name, weight in weights.items():
            try:
                int(weight)
            except ValueError:
                raise ValueError(f"{name}={weight!r} is not a whole percent") from None
        return weights

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if set(self.variants) != set(self.weights):
            raise ValueError(
                f"VARIANTS names {sorted(self.variants)} but WEIGHTS names {sorted(self.weights)}"
            )
        total = sum(self.percents().values())
        if total != 100:
            raise ValueError(f"WEIGHTS must sum to 100, not {total}")
        return self

    def percents(self) -> dict[str, int]:
        """Each variant's share of the users, in percent."""
        return {name: int(weight) for name, weight in self.weights.items()}
