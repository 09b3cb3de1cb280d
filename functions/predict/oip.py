"""KServe's two REST protocols over the same model: V1 (``:predict``) and the Open Inference
Protocol V2 (``/v2/models/{name}/infer``), as pure functions of a ``PredictLogic``.

V2 tensors arrive as ``{"name", "shape", "datatype", "data"}`` with ``data`` flat or nested
(row-major). An image model also takes one BYTES element holding the base64 of an encoded
image, preprocessed as ``/predict`` does.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from functions.core.errors import NotFound, ValidationFailed
from functions.core.http import validate_model
from functions.predict.logic import PredictLogic

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


def check_name(logic: PredictLogic, name: str, service: str, version: str | None = None) -> None:
    """404 unless ``name`` is the served model (by card name or Knative Service name)."""
    if name not in (logic.card.name, service):
        raise NotFound(f"model {name!r} is not served here; this serves {logic.card.name!r}")
    if version is not None and version != logic.card.version:
        raise NotFound(f"model {name!r} has no version {version!r}; it is {logic.card.version}")


def model_metadata(logic: PredictLogic) -> dict[str, Any]:
    card = logic.card
    return {
        "name": card.name,
        "versions": [card.version],
        "platform": "onnxruntime_onnx" if card.runtime == "onnx" else "tflite",
        "inputs": [_tensor_meta(card.input.name, card.input.shape)],
        "outputs": [_tensor_meta(card.output.name, card.output.shape)],
    }


def infer(logic: PredictLogic, request: V2InferRequest, rid: str) -> dict[str, Any]:
    (tensor,) = request.inputs
    output = logic.raw(_to_array(logic, tensor))
    name = logic.card.output.name
    if request.outputs and all(o.name != name for o in request.outputs):
        wanted = [o.name for o in request.outputs]
        raise ValidationFailed(f"unknown output(s) {wanted}; this model has {name!r}")
    return {
        "model_name": logic.card.name,
        "model_version": logic.card.version,
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


def v1_predict(logic: PredictLogic, request: V1PredictRequest) -> dict[str, Any]:
    if logic.request_model is None:
        batch = np.concatenate([logic.image_from_base64(_v1_image(i)) for i in request.instances])
    else:
        # Reuse the tabular schema so V1 rows get the same checks as /predict.
        rows = validate_model(logic.request_model, {"data": request.instances})
        batch = np.asarray(rows.data, np.float32)  # type: ignore[attr-defined]
    return {"predictions": logic.raw(batch).tolist()}


def _to_array(logic: PredictLogic, tensor: V2Tensor) -> np.ndarray:
    card = logic.card
    if tensor.name != card.input.name:
        raise ValidationFailed(
            f"unknown input {tensor.name!r}; this model takes {card.input.name!r}"
        )
    if tensor.datatype == "BYTES" and logic.request_model is None and len(tensor.data) == 1:
        return logic.image_from_base64(str(tensor.data[0]))
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


def _v1_image(instance: Any) -> str:
    """TF Serving's image forms: ``{"b64": ...}``, ``{"image_bytes": {"b64": ...}}`` or a string."""
    if isinstance(instance, dict) and "image_bytes" in instance:
        instance = instance["image_bytes"]
    if isinstance(instance, dict) and isinstance(instance.get("b64"), str):
        return str(instance["b64"])
    if isinstance(instance, str):
        return instance
    raise ValidationFailed('an image instance is {"b64": "<base64>"} or a base64 string')


def _tensor_meta(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": list(shape)}
