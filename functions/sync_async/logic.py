"""Pure logic of the sync-async proxy: jobs, the request event, the answers' shapes."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from functions.core import events
from functions.core.errors import ServiceUnavailable, error_for_status
from functions.core.event_data import InferenceRequestedData
from functions.core.jobstore import Job


def parse_json(raw: bytes) -> Any:
    """A backend's JSON body, or None when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def fast_label(status: int, body: Any) -> str:
    """The label from the fast predictor's ``/predict/label`` answer, or its error as ours.

    A 4xx is the client's fault and is answered as is; anything else is a 503."""
    if status == 200 and isinstance(body, dict) and isinstance(body.get("prediction"), dict):
        return str(body["prediction"]["label"])
    detail = body.get("detail") if isinstance(body, dict) else None
    message = f"the fast model answered {status}: {detail or 'no detail'}"
    raise error_for_status(status, message) if 400 <= status < 500 else ServiceUnavailable(message)


def new_job(job_id: str, fast_model: str, label: str, now: float, deadline: float) -> Job:
    return Job(job_id, now, now + deadline, {"model": fast_model, "prediction": label})


def request_event(
    job_id: str, raw: bytes, inline_max: int, source: str
) -> tuple[events.CloudEvent, bytes | None]:
    """The ``inference.requested`` event, and the blob to store when the input is too large
    to travel in it (the event then carries its key)."""
    text = base64.b64encode(raw).decode()
    large = len(text) > inline_max
    data = InferenceRequestedData(
        job_id=job_id, image_data=None if large else text, image_ref=job_id if large else None
    )
    event = events.make(
        events.INFERENCE_REQUESTED,
        source,
        data.model_dump(mode="json", exclude_none=True),
        **{events.JOB_ID: job_id},
    )
    return event, raw if large else None


def job_body(job: Job, now: float, slow_model: str) -> dict[str, Any]:
    """The seed's ``{job_id: {"prediction": ...}}`` plus the status, the models, the reason."""
    seen = job.seen_at(now)
    entry: dict[str, Any] = {
        "status": seen.status,
        "model": slow_model,
        "prediction": seen.result.get("prediction"),
        "fast": seen.fast,
    }
    if seen.reason:
        entry["reason"] = seen.reason
    return {"job_id": job.job_id, job.job_id: entry}


def health_all(
    fast: tuple[str, str], slow: tuple[str, str], store: str, sink: str
) -> dict[str, str]:
    """The seed's flat map: each model, the job store and the event sink, ``ok`` or why not."""
    return {fast[0]: fast[1], slow[0]: slow[1], "job_store": store, "event_sink": sink}
