"""Pure prediction logic: decoded batches in, response models out (no Flask, no HTTP).

``load(settings)`` reads the card(s), loads and warms the model(s), and returns the
``ServedModel``: the runtime ``predictor``, the ``codec`` its kind of card reads requests and
answers outputs with (``core.codecs``), and the outlier detector run beside it, if any. The
HTTP adapter keeps one per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from functions.core.cards import ModelCard, load_card
from functions.core.codecs import Codec, Label, codec_for, ranked
from functions.core.runtime import Predictor, load_predictor
from functions.predict.schemas import LabelPrediction, LabelResult, Prediction
from functions.predict.settings import PredictSettings

R = TypeVar("R", Prediction, LabelPrediction)


@dataclass(frozen=True)
class ServedModel:
    predictor: Predictor
    codec: Codec
    outlier: Predictor | None
    top_k: int
    mode: str | None = None  # the A/B variant this Service is, answered in every prediction

    @property
    def card(self) -> ModelCard:
        return self.predictor.card

    @property
    def labels(self) -> tuple[str, ...]:
        return self.predictor.labels

    # -- predictions (each with the label(s) it names, for the prediction log) -----------

    def predict(self, x: np.ndarray, rid: str) -> tuple[Prediction, Label]:
        """What ``/predict`` answers for batch ``x``, as the codec says, outliers included."""
        answer = self.codec.answer(self.predictor.predict(x), self.labels, self.top_k)
        extra: dict[str, Any] = {}
        if self.outlier is not None:
            scores = self.outlier.predict(x)[:, 0]
            extra = {"is_outlier": (scores < 0).tolist(), "outlier_score": scores.tolist()}
            if len(x) == 1:
                extra = {k: v[0] for k, v in extra.items()}
        return self._answer(Prediction, rid, **answer.fields, **extra), answer.label

    def label(self, x: np.ndarray, rid: str) -> tuple[LabelPrediction, Label]:
        """The top label of each row of ``x``; one row answers unlisted."""
        best = [ranked(p, self.labels, 1)[0] for p in self.predictor.predict(x)]
        results = [LabelResult(label=label, proba=proba) for label, proba in best]
        if len(results) == 1:
            return self._answer(LabelPrediction, rid, results[0]), results[0].label
        return self._answer(LabelPrediction, rid, results), [r.label for r in results]

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The model's output tensor as is (for the V1/V2 protocols)."""
        return self.predictor.predict(x)

    # -- descriptions -------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The seeds' metadata shape, plus what the model is."""
        card = self.card
        n_out = card.output.shape[-1]
        sample_out = self.predictor.predict(self.codec.sample)[0]
        meta = self.codec.describe() | {
            "prediction_type": "float32",
            "prediction_structure": f"(1,{n_out})",
            "prediction_sample": sample_out[:3].tolist() if n_out > 3 else sample_out.tolist(),
        }
        if self.outlier is not None:
            score = float(self.outlier.predict(self.codec.sample)[0, 0])
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

    def _answer(self, kind: type[R], rid: str, prediction: Any, **extra: Any) -> R:
        return kind(
            job_id=rid,
            model=self.card.name,
            version=self.card.version,
            prediction=prediction,
            mode=self.mode,
            **extra,
        )


def load(settings: PredictSettings) -> ServedModel:
    """Load and warm the model the settings name (and its outlier detector, if any)."""
    card = load_card(settings.model_cards, settings.model_name)
    predictor = load_predictor(card, settings.model_dir, settings.model_threads)
    outlier = None
    if settings.outlier_model:
        outlier_card = load_card(settings.model_cards, settings.outlier_model)
        outlier = load_predictor(outlier_card, settings.model_dir, 1)
    codec = codec_for(card, settings.model_dir, settings.max_batch_rows)
    served = ServedModel(predictor, codec, outlier, settings.top_k, settings.variant)
    served.metadata()  # warm-up: one real inference through every model before traffic
    return served
