"""Pure prediction logic: validated requests in, response models out (no Flask, no HTTP).

``load(settings)`` reads the card(s), loads and warms the model(s), and returns a
``PredictLogic`` bound to them; the HTTP adapter keeps one per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel

from functions.core.cards import ModelCard, load_card
from functions.core.errors import ModelLoadError
from functions.core.preprocessing import decode_base64, decode_image, to_tensor
from functions.core.runtime import Predictor, load_predictor
from functions.predict.schemas import LabelPrediction, LabelResult, Prediction, tabular_request
from functions.predict.settings import PredictSettings

R = TypeVar("R", Prediction, LabelPrediction)


@dataclass(frozen=True)
class PredictLogic:
    model: Predictor
    outlier: Predictor | None
    request_model: type[BaseModel] | None  # tabular request schema; None for image models
    sample: Any  # tabular rows, or the sample image's bytes
    top_k: int
    mode: str | None = None  # the A/B variant this Service is, answered in every prediction

    @property
    def card(self) -> ModelCard:
        return self.model.card

    # -- inputs -------------------------------------------------------------------------

    def image_tensor(self, raw: bytes) -> np.ndarray:
        assert self.card.preprocessing is not None
        return to_tensor(decode_image(raw), self.card.preprocessing)

    def image_from_base64(self, text: str) -> np.ndarray:
        return self.image_tensor(decode_base64(text))

    # -- predictions --------------------------------------------------------------------

    def predict_rows(self, rows: Sequence[Sequence[float]], rid: str) -> Prediction:
        x = np.asarray(rows, dtype=np.float32)
        probabilities = self.model.predict(x)
        extra: dict[str, Any] = {}
        if self.outlier is not None:
            scores = self.outlier.predict(x)[:, 0]
            extra = {"is_outlier": (scores < 0).tolist(), "outlier_score": scores.tolist()}
            if len(rows) == 1:
                extra = {k: v[0] for k, v in extra.items()}
        prediction = probabilities.tolist()
        return self._answer(
            Prediction, rid, prediction[0] if len(rows) == 1 else prediction, **extra
        )

    def predict_tensor(self, x: np.ndarray, rid: str) -> Prediction:
        """An image batch of one: the top label, its probability and the top k."""
        probabilities = self.model.predict(x)[0]
        top = self._top(probabilities, self.top_k)
        return self._answer(Prediction, rid, top[0].label, proba=top[0].proba, top_k=top)

    def label_rows(self, rows: Sequence[Sequence[float]], rid: str) -> LabelPrediction:
        best = [self._top(p, 1)[0] for p in self.model.predict(np.asarray(rows, np.float32))]
        return self._answer(LabelPrediction, rid, best[0] if len(rows) == 1 else best)

    def label_tensor(self, x: np.ndarray, rid: str) -> LabelPrediction:
        return self._answer(LabelPrediction, rid, self._top(self.model.predict(x)[0], 1)[0])

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The model's output tensor as is (for the V1/V2 protocols)."""
        return self.model.predict(x)

    # -- descriptions -------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The seeds' metadata shape, plus what the model is."""
        card = self.card
        n_out = card.output.shape[-1]
        if self.request_model is not None:
            sample_out = self.model.predict(np.asarray(self.sample, np.float32))[0]
            meta: dict[str, Any] = {
                "data_type": "float32",
                "data_structure": f"(1,{card.input.shape[-1]})",
                "data_sample": self.sample,
            }
        else:
            sample_out = self.model.predict(self.image_tensor(self.sample))[0]
            meta = {
                "data_type": "str",
                "data_structure": "(1,1)",
                "data_sample": "base64 encoded image file",
            }
        meta |= {
            "prediction_type": "float32",
            "prediction_structure": f"(1,{n_out})",
            "prediction_sample": sample_out[:3].tolist() if n_out > 3 else sample_out.tolist(),
        }
        if self.outlier is not None:
            score = float(self.outlier.predict(np.asarray(self.sample, np.float32))[0, 0])
            meta |= {
                "outlier_type": "bool, float32",
                "outlier_structure": "(1,2)",
                "outlier_sample": [score < 0, score],
                "outlier_model": self.outlier.card.name,
            }
        return meta | {
            "model": card.name,
            "version": card.version,
            "runtime": card.runtime,
            "task": card.task,
            "description": card.description,
        }

    # -- helpers ------------------------------------------------------------------------

    def _top(self, probabilities: np.ndarray, k: int) -> list[LabelResult]:
        order = np.argsort(probabilities)[::-1][:k]
        return [
            LabelResult(label=self._label(int(i)), proba=float(probabilities[i])) for i in order
        ]

    def _label(self, index: int) -> str:
        labels = self.model.labels
        return labels[index] if index < len(labels) else str(index)

    def _answer(self, kind: type[R], rid: str, prediction: Any, **extra: Any) -> R:
        return kind(
            job_id=rid,
            model=self.card.name,
            version=self.card.version,
            prediction=prediction,
            mode=self.mode,
            **extra,
        )


def load(settings: PredictSettings) -> PredictLogic:
    """Load and warm the model the settings name (and its outlier detector, if any)."""
    card = load_card(settings.model_cards, settings.model_name)
    model = load_predictor(card, settings.model_dir, settings.model_threads)
    outlier = None
    if settings.outlier_model:
        outlier_card = load_card(settings.model_cards, settings.outlier_model)
        outlier = load_predictor(outlier_card, settings.model_dir, 1)
    if card.task == "image":
        if card.preprocessing is None or card.sample is None or card.sample.image is None:
            raise ModelLoadError(f"image model card {card.name} needs preprocessing and sample")
        sample: Any = (settings.model_dir / card.sample.image).read_bytes()
        request_model = None
    else:
        n_features = card.input.shape[-1]
        sample = card.sample.data if card.sample and card.sample.data else [[0.0] * n_features]
        request_model = tabular_request(n_features, settings.max_batch_rows)
    logic = PredictLogic(model, outlier, request_model, sample, settings.top_k, settings.variant)
    logic.metadata()  # warm-up: one real inference through every model before traffic
    return logic
