"""The predictor's OpenAPI operations: what each endpoint takes and answers."""

from __future__ import annotations

from pydantic import BaseModel

from functions.core.openapi import Operation
from functions.predict.oip import V1PredictRequest, V2InferRequest
from functions.predict.schemas import LabelPrediction, Prediction


def operations(predict_body: type[BaseModel]) -> dict[str, Operation]:
    """``predict_body`` is the served card's request model (tabular rows or an image)."""
    return {
        "health": Operation("Health (503 while the model loads)"),
        "metadata": Operation("Model metadata in the seeds' shape"),
        "label": Operation("Label names in output order"),
        "predict": Operation("Predict", request=predict_body, response=Prediction),
        "predict_label": Operation(
            "Predict the top label", request=predict_body, response=LabelPrediction
        ),
        "predict_test": Operation("Predict the card's sample", response=Prediction),
        "predict_test_label": Operation("Top label of the card's sample", response=LabelPrediction),
        "metrics": Operation("Prometheus metrics", response_type="text/plain"),
        "v1_model": Operation("KServe V1 model status"),
        "v1_predict": Operation("KServe V1 predict", request=V1PredictRequest),
        "v2_server": Operation("Open Inference Protocol server metadata"),
        "v2_live": Operation("Open Inference Protocol liveness"),
        "v2_ready": Operation("Open Inference Protocol readiness"),
        "v2_model": Operation("Open Inference Protocol model metadata"),
        "v2_model_ready": Operation("Open Inference Protocol model readiness"),
        "v2_infer": Operation("Open Inference Protocol inference", request=V2InferRequest),
    }
