"""One ``prediction.logged`` event into the log store, written once for both of its ways in:
the ingest's delivery and the replay of a dead letter."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from functions.core import events
from functions.core.errors import ValidationFailed
from functions.core.event_data import PredictionLogData
from functions.prediction_log.store import LogStore

logger = logging.getLogger("predictions")


def store_event(store: LogStore, event: events.CloudEvent) -> bool:
    """Store the event's record; False when its (source, id) was stored already. A 422
    ``ValidationFailed`` when the event is no prediction log: storing it again cannot help."""
    if event["type"] != events.PREDICTION_LOGGED:
        raise ValidationFailed(
            f"this subscriber takes {events.PREDICTION_LOGGED}, not {event['type']}"
        )
    try:
        record = PredictionLogData.model_validate(event.data)
    except ValidationError as e:
        raise ValidationFailed(
            f"event {event['id']}: data is not a prediction log: {e.error_count()} error(s)"
        ) from e
    added = store.add(
        str(event["source"]),
        str(event["id"]),
        str(event["time"]),
        record.model_dump(mode="json", exclude_none=True),
    )
    if added:  # the seed's `kubectl logs` line, here rather than on every predictor's path
        logger.info("prediction logged", extra=_log_fields(record))
    return added


def _log_fields(record: PredictionLogData) -> dict[str, object]:
    fields = ("job_id", "service", "model", "variant", "endpoint", "status", "label", "is_outlier")
    return {name: getattr(record, name) for name in fields} | {"ms": record.latency_ms}
