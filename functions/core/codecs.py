"""Input codecs: how a kind of model card reads its requests and answers its outputs.

A model gets its codec once, when it loads (as MLServer's codecs or KServe's preprocess
hooks do), so no handler asks which kind of model it serves:

- ``TabularCodec``: ``{"data": [[f1..fn], ...]}``, validated against the card's feature
  count and the row limit; it answers the probabilities, a list per row.
- ``ImageCodec``: the base64 of an encoded image, preprocessed as the card says
  (``core.preprocessing``); it answers the top label, its probability and the top k.

No HTTP here: a codec takes bytes or parsed JSON and raises the 4xx ``FunctionError`` that
names what is wrong with them. ``top_label`` and ``ranked`` name a model's outputs for every
function (the predictor, the async worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from functions.core.cards import ModelCard, Preprocessing
from functions.core.errors import ModelLoadError, ValidationFailed
from functions.core.http import parse_model, validate_model
from functions.core.preprocessing import decode_base64, decode_image, to_tensor

FLOAT32_MAX = 3.4028234663852886e38
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

Label = str | list[str]  # one per row where a batch has several


class TabularRequest(BaseModel):
    """``{"data": [[f1..fn], ...]}``; ``tabular_request`` sets the feature count and row limit."""

    model_config = _STRICT
    data: list[list[float]]


def tabular_request(n_features: int, max_rows: int) -> type[TabularRequest]:
    """The request model of a card with ``n_features`` features, at most ``max_rows`` rows."""
    feature = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]  # the models take float32
    row = Annotated[list[feature], Field(min_length=n_features, max_length=n_features)]
    rows = Annotated[list[row], Field(min_length=1, max_length=max_rows)]
    return create_model("TabularRequest", __base__=TabularRequest, data=(rows, ...))


class ImageRequest(BaseModel):
    """``{"image_data": "<base64>"}``; line breaks in the base64 are accepted."""

    model_config = _STRICT
    image_data: str = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a model's output answers: the prediction's fields, and the label(s) they name."""

    fields: dict[str, Any]
    label: Label


class Codec(Protocol):
    """How one kind of model reads its requests and answers its outputs."""

    @property
    def request_model(self) -> type[BaseModel]:
        """The ``/predict`` body (parsed by ``decode``, documented in OpenAPI)."""
        ...

    @property
    def sample(self) -> np.ndarray:
        """The card's sample as the model's input batch (decoded once, read-only)."""
        ...

    def decode(self, body: bytes) -> np.ndarray:
        """A ``/predict`` body -> the model's input batch."""
        ...

    def decode_instances(self, instances: list[Any]) -> np.ndarray:
        """KServe V1 ``instances`` -> the input batch."""
        ...

    def decode_bytes(self, elements: list[Any]) -> np.ndarray | None:
        """The elements of an Open Inference Protocol BYTES tensor -> the input batch, or
        None where this kind of model takes no encoded input (its tensors are numeric)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The seeds' description of the input: ``data_type``, ``data_structure``, ``data_sample``."""
        ...

    def answer(self, probabilities: np.ndarray, labels: Sequence[str], k: int) -> Answer:
        """The ``/predict`` answer to the model's output for the decoded batch."""
        ...


def label_name(labels: Sequence[str], index: int) -> str:
    """The name of output ``index``; its number where the card names fewer."""
    return labels[index] if index < len(labels) else str(index)


def top_label(probabilities: np.ndarray, labels: Sequence[str]) -> tuple[str, float]:
    """The most probable label of one row and its probability (the first of equals)."""
    best = int(np.argmax(probabilities))
    return label_name(labels, best), float(probabilities[best])


def ranked(probabilities: np.ndarray, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable labels of one row, most probable first."""
    order = np.argsort(probabilities)[::-1][:k]
    return [(label_name(labels, int(i)), float(probabilities[i])) for i in order]


def _read_only(batch: np.ndarray) -> np.ndarray:
    batch.flags.writeable = False  # shared by every request of the process
    return batch


class TabularCodec:
    """Rows of float features, as many as the card's input takes."""

    def __init__(
        self, n_features: int, max_rows: int, sample_rows: Sequence[Sequence[float]]
    ) -> None:
        self.n_features = n_features
        self.request_model: type[TabularRequest] = tabular_request(n_features, max_rows)
        self.sample_rows = sample_rows
        self.sample = _read_only(np.asarray(sample_rows, np.float32))

    @classmethod
    def of(cls, card: ModelCard, max_rows: int) -> TabularCodec:
        n_features = card.input.shape[-1]
        sample = card.sample.data if card.sample and card.sample.data else [[0.0] * n_features]
        return cls(n_features, max_rows, sample)

    def decode(self, body: bytes) -> np.ndarray:
        return np.asarray(parse_model(self.request_model, body).data, np.float32)

    def decode_instances(self, instances: list[Any]) -> np.ndarray:
        # The /predict schema, so V1 rows get the same checks.
        rows = validate_model(self.request_model, {"data": instances})
        return np.asarray(rows.data, np.float32)

    def decode_bytes(self, elements: list[Any]) -> np.ndarray | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "data_type": "float32",
            "data_structure": f"(1,{self.n_features})",
            "data_sample": self.sample_rows,
        }

    def answer(self, probabilities: np.ndarray, labels: Sequence[str], k: int) -> Answer:
        """The probabilities; the label of each row is its argmax. One row answers unlisted."""
        rows = probabilities.tolist()
        names = [label_name(labels, i) for i in probabilities.argmax(axis=1).tolist()]
        if len(rows) == 1:
            return Answer({"prediction": rows[0]}, names[0])
        return Answer({"prediction": rows}, names)


class ImageCodec:
    """One encoded image (any format Pillow reads), preprocessed as the card says."""

    request_model = ImageRequest

    def __init__(self, preprocessing: Preprocessing, sample: bytes) -> None:
        self.preprocessing = preprocessing
        self.sample = _read_only(self.image(sample))

    @classmethod
    def of(cls, card: ModelCard, model_dir: Path) -> ImageCodec:
        if card.preprocessing is None or card.sample is None or card.sample.image is None:
            raise ModelLoadError(f"image model card {card.name} needs preprocessing and sample")
        return cls(card.preprocessing, (model_dir / card.sample.image).read_bytes())

    def image(self, raw: bytes) -> np.ndarray:
        """Image bytes -> a batch of one (4xx when they are not an image)."""
        return to_tensor(decode_image(raw), self.preprocessing)

    def base64(self, text: str) -> np.ndarray:
        return self.image(decode_base64(text))

    def decode(self, body: bytes) -> np.ndarray:
        return self.base64(parse_model(ImageRequest, body).image_data)

    def decode_instances(self, instances: list[Any]) -> np.ndarray:
        return np.concatenate([self.base64(_v1_image(i)) for i in instances])

    def decode_bytes(self, elements: list[Any]) -> np.ndarray | None:
        return self.base64(str(elements[0])) if len(elements) == 1 else None

    def describe(self) -> dict[str, Any]:
        return {
            "data_type": "str",
            "data_structure": "(1,1)",
            "data_sample": "base64 encoded image file",
        }

    def answer(self, probabilities: np.ndarray, labels: Sequence[str], k: int) -> Answer:
        """The top label of the image (a batch of one), its probability and the top ``k``."""
        top = ranked(probabilities[0], labels, k)
        label, proba = top[0]
        fields = {
            "prediction": label,
            "proba": proba,
            "top_k": [{"label": name, "proba": p} for name, p in top],
        }
        return Answer(fields, label)


def codec_for(card: ModelCard, model_dir: Path, max_rows: int) -> Codec:
    """The codec of ``card``'s kind: images for image cards, rows for every other."""
    if card.task == "image":
        return ImageCodec.of(card, model_dir)
    return TabularCodec.of(card, max_rows)


def _v1_image(instance: Any) -> str:
    """TF Serving's image forms: ``{"b64": ...}``, ``{"image_bytes": {"b64": ...}}`` or a string."""
    if isinstance(instance, dict) and "image_bytes" in instance:
        instance = instance["image_bytes"]
    if isinstance(instance, dict) and isinstance(instance.get("b64"), str):
        return str(instance["b64"])
    if isinstance(instance, str):
        return instance
    raise ValidationFailed('an image instance is {"b64": "<base64>"} or a base64 string')
