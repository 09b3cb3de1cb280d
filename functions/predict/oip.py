"""KServe's two REST protocols over the same model: V1 (``:predict``) and the Open Inference
Protocol V2 (``/v2/models/{name}/infer``), as pure functions of a ``ServedModel``.

V2 tensors arrive as ``{"name", "shape", "datatype", "data"}`` with ``data`` flat or nested
(row-major). An image model also takes one BYTES element holding the base64 of an encoded
image, and V1 instances in TF Serving's image forms: its codec decodes both as ``/predict``
does.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from functions.core.errors import NotFound, ValidationFailed
from functions.predict.logic import ServedModel

SERVER = {"name": "ml-serving-functions", "version": "0.1.0", "extensions": []}
_NUMERIC = {"FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16"}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class V2Tensor(_Request):
    name: str
    shape: list[int] = Field(min_length=1)
    datatype: Literal[
        "BOOL",
        "UINT8",
        "UINT16",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    ]
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(_Request):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(_Request):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=1)
    outputs: list[V2RequestedOutput] | None = None


class V1PredictRequest(_Request):
    instances: list[Any] = Field(min_length=1)


def check_name(served: ServedModel, name: str, service: str, version: str | None = None) -> None:
    """404 unless ``name`` is the served model (by card name or Knative Service name)."""
    card = served.card
    if name not in (card.name, service):
        raise NotFound(f"model {name!r} is not served here; this serves {card.name!r}")
    if version is not None and version != card.version:
        raise NotFound(f"model {name!r} has no version {version!r}; it is {card.version}")


def model_metadata(served: ServedModel) -> dict[str, Any]:
    card = served.card
    return {
        "name": card.name,
        "versions": [card.version],
        "platform": "onnxruntime_onnx" if card.runtime == "onnx" else "tflite",
        "inputs": [_tensor_meta(card.input.name, card.input.shape)],
        "outputs": [_tensor_meta(card.output.name, card.output.shape)],
    }


def infer(served: ServedModel, request: V2InferRequest, rid: str) -> dict[str, Any]:
    (tensor,) = request.inputs
    output = served.raw(_to_array(served, tensor))
    name = served.card.output.name
    if request.outputs and all(o.name != name for o in request.outputs):
        wanted = [o.name for o in request.outputs]
        raise ValidationFailed(f"unknown output(s) {wanted}; this model has {name!r}")
    return {
        "model_name": served.card.name,
        "model_version": served.card.version,
        "id": request.id or rid,
        "outputs": [
            {
                "name": name,
                "shape": list(output.shape),
                "datatype": "FP32",
                "data": output.reshape(-1).tolist(),
            }
        ],
    }


def v1_predict(served: ServedModel, request: V1PredictRequest) -> dict[str, Any]:
    return {"predictions": served.raw(served.codec.decode_instances(request.instances)).tolist()}


def _to_array(served: ServedModel, tensor: V2Tensor) -> np.ndarray:
    card = served.card
    if tensor.name != card.input.name:
        raise ValidationFailed(
            f"unknown input {tensor.name!r}; this model takes {card.input.name!r}"
        )
    encoded = served.codec.decode_bytes(tensor.data) if tensor.datatype == "BYTES" else None
    if encoded is not None:
        return encoded
    if tensor.datatype not in _NUMERIC:
        raise ValidationFailed(f"datatype {tensor.datatype} is not accepted by {card.name}")
    try:
        with np.errstate(over="ignore"):  # out-of-range values become inf: refused below
            array = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    except (ValueError, TypeError) as e:
        raise ValidationFailed(f"data does not fit shape {tensor.shape}: {e}") from e
    expected = card.input.shape
    if array.ndim != len(expected) or any(
        want not in (-1, got) for want, got in zip(expected[1:], array.shape[1:], strict=True)
    ):
        raise ValidationFailed(f"input shape {list(array.shape)} does not match {list(expected)}")
    if not np.isfinite(array).all():
        raise ValidationFailed("input contains NaN or infinity")
    return array


def _tensor_meta(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": list(shape)}
