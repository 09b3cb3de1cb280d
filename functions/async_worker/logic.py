"""Pure logic of the async worker: the slow model, the event's input, the dead letter's reason."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from functions.async_worker.settings import AsyncWorkerSettings
from functions.core.cards import ModelCard, load_card
from functions.core.codecs import ImageCodec, top_label
from functions.core.event_data import InferenceCompletedData, InferenceRequestedData
from functions.core.jobstore import JobStore
from functions.core.preprocessing import decode_base64
from functions.core.runtime import Predictor, load_predictor


@dataclass(frozen=True)
class SlowModel:
    predictor: Predictor
    codec: ImageCodec

    @property
    def card(self) -> ModelCard:
        return self.predictor.card

    def label(self, job_id: str, raw: bytes) -> InferenceCompletedData:
        """The top label of one image (4xx when the bytes are not an image)."""
        return self.top(job_id, self.codec.image(raw))

    def top(self, job_id: str, x: np.ndarray) -> InferenceCompletedData:
        label, proba = top_label(self.predictor.predict(x)[0], self.predictor.labels)
        return InferenceCompletedData(
            job_id=job_id, model=self.card.name, prediction=label, proba=proba
        )


def load(settings: AsyncWorkerSettings) -> SlowModel:
    """Load the slow model and run it once on the card's sample (warm-up before traffic)."""
    card = load_card(settings.model_cards, settings.model_name)
    codec = ImageCodec.of(card, settings.model_dir)
    slow = SlowModel(load_predictor(card, settings.model_dir, settings.model_threads), codec)
    slow.top("warm-up", codec.sample)
    return slow


def input_bytes(data: InferenceRequestedData, store: JobStore) -> bytes | None:
    """The image, from the event or by reference from the store (None when it expired)."""
    if data.image_data is not None:
        return decode_base64(data.image_data)
    return store.get_blob(data.image_ref) if data.image_ref else None


def dead_letter_reason(attributes: Mapping[str, Any]) -> str:
    """Why the broker gave up, from the ``knativeerror*`` extensions it adds."""
    code = attributes.get("knativeerrorcode", "?")
    try:
        detail = base64.b64decode(str(attributes.get("knativeerrordata", ""))).decode(
            errors="replace"
        )
    except (binascii.Error, ValueError):
        detail = ""
    detail = " ".join(detail.split())[:300]
    return (
        f"the worker failed after every retry (last status {code}){': ' + detail if detail else ''}"
    )
