"""Model cards: what each model in the zoo is, and where its built artifact lives.

A card is ``models/<name>/model.toml`` (committed); the artifact it names is built by
``make models`` into the model directory (ignored by git) and verified by its sha256.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.core.errors import ModelLoadError


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Frozen):
    name: str
    dtype: Literal["float32"] = "float32"
    shape: tuple[int, ...] = Field(description="-1 marks a dynamic dimension")


class Preprocessing(_Frozen):
    """Image preprocessing: decode -> RGB -> resize shorter side -> center crop -> normalise."""

    size: int = Field(gt=0, description="center crop size")
    resize: int = Field(gt=0, description="shorter side before the crop")
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: Literal["NCHW", "NHWC"]


class Labels(_Frozen):
    names: tuple[str, ...] | None = None
    file: str | None = Field(None, description="JSON list of names, in the model directory")
    sha256: str | None = None


class Sample(_Frozen):
    data: tuple[tuple[float, ...], ...] | None = None
    image: str | None = Field(None, description="path in the model directory")


class ModelCard(_Frozen):
    name: str
    version: str
    description: str = ""
    task: Literal["tabular", "image", "outlier"]
    runtime: Literal["onnx", "tflite"]
    file: str
    sha256: str
    builder: Literal["tabular", "images"]
    source: str = ""
    input: TensorSpec
    output: TensorSpec
    preprocessing: Preprocessing | None = None
    labels: Labels | None = None
    sample: Sample | None = None


def load_card(cards_dir: Path, name: str) -> ModelCard:
    """Read and validate ``<cards_dir>/<name>/model.toml``."""
    path = cards_dir / name / "model.toml"
    try:
        with path.open("rb") as f:
            return ModelCard.model_validate(tomllib.load(f))
    except FileNotFoundError as e:
        known = ", ".join(sorted(p.parent.name for p in cards_dir.glob("*/model.toml")))
        raise ModelLoadError(f"no model card {path} (known models: {known})") from e
    except (tomllib.TOMLDecodeError, ValidationError) as e:
        raise ModelLoadError(f"invalid model card {path}: {e}") from e


def all_cards(cards_dir: Path) -> list[ModelCard]:
    """Every card under ``cards_dir``, sorted by name."""
    return [load_card(cards_dir, p.parent.name) for p in sorted(cards_dir.glob("*/model.toml"))]
