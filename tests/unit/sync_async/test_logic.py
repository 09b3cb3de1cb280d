"""Pure logic of the sync-async proxy."""

from __future__ import annotations

import base64

import pytest

from functions.core import events
from functions.core.errors import BadRequest, NotFound, ServiceUnavailable, ValidationFailed
from functions.core.jobstore import TIMED_OUT, Job
from functions.sync_async import logic


def test_fast_label_reads_the_predictor_answer() -> None:
    body = {"job_id": "j", "prediction": {"label": "tabby", "proba": 0.5}}
    assert logic.fast_label(200, body) == "tabby"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (422, ValidationFailed),
        (404, NotFound),
        (500, ServiceUnavailable),
        (503, ServiceUnavailable),
    ],
)
def test_fast_errors_keep_4xx_and_make_5xx_unavailable(status: int, error: type) -> None:
    with pytest.raises(error, match=f"answered {status}: broken"):
        logic.fast_label(status, {"detail": "broken"})


def test_a_200_that_is_not_a_label_is_unavailable() -> None:
    with pytest.raises(ServiceUnavailable):
        logic.fast_label(200, None)


def test_small_inputs_travel_in_the_event_large_ones_by_reference() -> None:
    event, blob = logic.request_event("j", b"x" * 30, 100, "/sync-async")
    assert blob is None
    assert event["type"] == events.INFERENCE_REQUESTED
    assert event[events.JOB_ID] == "j"
    assert event.data == {"job_id": "j", "image_data": base64.b64encode(b"x" * 30).decode()}
    event, blob = logic.request_event("j", b"x" * 300, 100, "/sync-async")
    assert blob == b"x" * 300
    assert event.data == {"job_id": "j", "image_ref": "j"}


def test_job_body_is_the_seed_shape_with_a_status() -> None:
    job = logic.new_job("j", "lite0", "tabby", now=100.0, deadline=10.0, input_digest="d")
    body = logic.job_body(job, 105.0, "lite2")
    assert body == {
        "job_id": "j",
        "j": {
            "status": "pending",
            "model": "lite2",
            "prediction": None,
            "fast": {"model": "lite0", "prediction": "tabby"},
        },
    }
    assert logic.job_body(job, 111.0, "lite2")["j"]["status"] == "failed"
    assert logic.job_body(job, 111.0, "lite2")["j"]["reason"] == TIMED_OUT


def test_a_done_job_past_its_deadline_stays_done() -> None:
    job = Job("j", 0.0, 1.0, {}, status="done", result={"prediction": "tiger cat"})
    assert logic.job_body(job, 50.0, "lite2")["j"]["prediction"] == "tiger cat"


def test_a_second_accept_goes_on_with_the_same_input_only() -> None:
    job = logic.new_job("j", "lite0", "tabby", 0.0, 10.0, logic.digest(b"cat"))
    assert logic.resumed(job, "j", logic.digest(b"cat")) is job
    with pytest.raises(BadRequest, match="exists already"):
        logic.resumed(job, "j", logic.digest(b"dog"))
    failed = Job("j", 0.0, 1.0, {}, status="failed", reason="not queued: x", digest=job.digest)
    with pytest.raises(BadRequest, match=r"failed \(not queued: x\): send a new X-Request-Id"):
        logic.resumed(failed, "j", job.digest)
    with pytest.raises(ServiceUnavailable):
        logic.resumed(None, "j", job.digest)


def test_an_unknown_job_says_whether_the_store_started_empty_since() -> None:
    day = 86400.0
    assert "holds no jobs" in logic.unknown_job("j", None, 1000.0, day)
    recent = logic.unknown_job("j", 0.0, 3600.0, day)
    assert "started empty at 1970-01-01T00:00:00Z" in recent
    assert "was lost, send it again" in recent
    assert logic.unknown_job("j", 0.0, 2 * day, day) == "no job j (unknown, or its result expired)"
