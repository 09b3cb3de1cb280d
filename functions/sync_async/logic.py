"""Pure logic of the sync-async proxy: jobs, the request event, the answers' shapes."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from functions.core import events
from functions.core.errors import BadRequest, ServiceUnavailable, error_for_status
from functions.core.event_data import InferenceRequestedData
from functions.core.jobstore import RETRY_AFTER_SECONDS, Job


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


def digest(raw: bytes) -> str:
    """What a retry's input is compared by."""
    return hashlib.sha256(raw).hexdigest()


def new_job(
    job_id: str, fast_model: str, label: str, now: float, deadline: float, input_digest: str = ""
) -> Job:
    fast = {"model": fast_model, "prediction": label}
    return Job(job_id, now, now + deadline, fast, digest=input_digest)


def resumed(existing: Job | None, job_id: str, input_digest: str) -> Job:
    """The stored job a second accept of ``job_id`` goes on with: the same input, not failed
    (a 400 otherwise: the id is taken). It is queued again when it is pending and its event
    was never sent; else its fast answer is answered again."""
    if existing is None:  # expired, or the store was reset, since the create said it exists
        detail = f"job {job_id} changed while it was accepted: retry"
        raise ServiceUnavailable(detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if existing.digest != input_digest:
        raise BadRequest(f"job {job_id} exists already: send a new X-Request-Id")
    if existing.status == "failed":
        raise BadRequest(f"job {job_id} failed ({existing.reason}): send a new X-Request-Id")
    return existing


def unknown_job(job_id: str, since: float | None, now: float, ttl: float) -> str:
    """The 404's detail for a job the store does not hold: a store that started empty less
    than ``ttl`` ago (new, or reset without its data) says since when, so a client that sent
    the job earlier knows it was lost (not expired) and sends it again."""
    if since is None:
        return f"no job {job_id}: the job store holds no jobs (it is new, or lost its data)"
    if now - since < ttl:
        return (
            f"no job {job_id}: unknown to the job store, which started empty at "
            f"{iso_time(since)}: a job sent before then was lost, send it again"
        )
    return f"no job {job_id} (unknown, or its result expired)"


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
