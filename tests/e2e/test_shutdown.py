"""Graceful shutdown of the production server, for every function it serves: on SIGTERM it
stops accepting, finishes the requests in flight, flushes the event spool to the sink, and
exits 0.

Each function gets a request that is provably in flight when the signal lands: its head is
sent with ``Expect: 100-continue`` and the server's ``100 Continue`` awaited, and its body
follows only once the server refuses new connections (``HeldRequest``). Whatever the request
then does (a model, a store, calls to real backends) happens after SIGTERM.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import orjson
import pytest

from emulators.manifests import knative_services, load_kustomization
from functions.core import events
from functions.core.event_data import PredictionLogData
from functions.core.jobstore import open_store
from functions.core.settings import REPO_ROOT
from functions.sync_async.logic import new_job, request_event
from tests.helpers import (
    PREDICT_SOURCE,
    HeldRequest,
    free_port,
    refusing,
    sample_bytes,
    server,
    wait_for,
)

pytestmark = pytest.mark.e2e
SETOSA = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})
JSON = {"Content-Type": "application/json"}
SERVE = [sys.executable, "-m", "functions.core.serve", "--host=127.0.0.1"]
# FUNCTION_TARGET -> FUNCTION_SOURCE of every function a Knative Service runs.
SOURCES = {
    spec.env["FUNCTION_TARGET"]: spec.env["FUNCTION_SOURCE"]
    for spec in knative_services(load_kustomization(REPO_ROOT / "knative"))
}


def predictor(model: str) -> Iterator[str]:
    """A real predictor, as a backend of the proxies (no K_SINK: only the proxy logs)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"FUNCTION_TARGET": "predict", "FUNCTION_SOURCE": PREDICT_SOURCE, "MODEL_NAME": model}
    with server([*SERVE, f"--port={port}"], env, f"{url}/health"):
        yield url


@pytest.fixture(scope="module")
def iris() -> Iterator[str]:
    yield from predictor("iris-svc")


@pytest.fixture(scope="module")
def imagenet() -> Iterator[str]:
    yield from predictor("efficientnet-lite0")


def logged_jobs(sink: str) -> set[str]:
    """The job ids of the prediction.logged events the sink received (the outbox sends them in
    structured mode; a binary-mode event was published on a request's path)."""
    jobs = set()
    for attempt in httpx.get(f"{sink}/_events").json():
        if attempt["path"] == "/events" and "ce-type" not in attempt["headers"]:
            event = orjson.loads(attempt["data"])
            if event["type"] == events.PREDICTION_LOGGED:
                jobs.add(event["jobid"])
    return jobs


@dataclass(frozen=True)
class Call:
    """One request to a function, the env it needs, and what it must answer."""

    env: dict[str, str]
    method: str
    path: str
    body: bytes
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    logged: bool = True  # the function records a prediction.logged event for it


Backend = Callable[[str], str]  # a fixture's value by its name


def _predict(backend: Backend, tmp: Path, rid: str) -> Call:
    env = {"MODEL_NAME": "iris-svc", "WORKERS": "2"}
    return Call(env, "POST", "/predict", SETOSA, 200, JSON)


def _prediction_log(backend: Backend, tmp: Path, rid: str) -> Call:
    """The query API: a feedback, with the token (an unknown job: a 404 problem)."""
    env = {"LOG_STORE_URL": f"sqlite:///{tmp / 'log.sqlite3'}", "API_TOKEN": "t" * 24}
    headers = {**JSON, "Authorization": f"Bearer {'t' * 24}"}
    feedback = orjson.dumps({"job_id": rid, "label": "setosa"})
    return Call(env, "POST", "/feedback", feedback, 404, headers, False)


def _prediction_log_ingest(backend: Backend, tmp: Path, rid: str) -> Call:
    record = PredictionLogData(
        job_id=rid, service="iris", model="iris-svc", version="1", variant="iris-00001",
        endpoint="predict", status=200, latency_ms=1.0,
    )  # fmt: skip
    event = events.make(events.PREDICTION_LOGGED, "/tests", record.model_dump(mode="json"))
    headers, body = events.to_binary(event)
    env = {"LOG_STORE_URL": f"sqlite:///{tmp / 'log.sqlite3'}"}
    return Call(env, "POST", "/", body, 202, headers, False)


def _prediction_log_dead_letter(backend: Backend, tmp: Path, rid: str) -> Call:
    """The dead-letter sink: the event it was handed is on disk before the 202."""
    call = _prediction_log_ingest(backend, tmp, rid)
    return replace(call, env={**call.env, "DEAD_LETTER_DIR": str(tmp / "dead-letters")})


def _ab_router(backend: Backend, tmp: Path, rid: str) -> Call:
    env = {"VARIANTS": f"a={backend('iris')}", "WEIGHTS": "a=100"}
    headers = {**JSON, "X-User-Id": "user-1"}
    return Call(env, "POST", "/predict", SETOSA, 200, headers, False)


def _fanout(backend: Backend, tmp: Path, rid: str) -> Call:
    env = {"BACKENDS": f"setosa={backend('iris')}", "BACKEND_TIMEOUT": "20", "THREADS": "4"}
    return Call(env, "POST", "/predict", SETOSA, 200, JSON)


def _sync_async(backend: Backend, tmp: Path, rid: str) -> Call:
    env = {
        "FAST_URL": backend("imagenet"),
        "SLOW_URL": "http://127.0.0.1:9",  # only its /health/all would call it
        "BACKEND_TIMEOUT": "20",
        "JOB_STORE_URL": f"sqlite:///{tmp / 'jobs.sqlite3'}",
        "THREADS": "4",
    }
    body = orjson.dumps({"image_data": base64.b64encode(sample_bytes("cat.png")).decode()})
    return Call(env, "POST", "/predict", body, 200, JSON)


def _async_worker(backend: Backend, tmp: Path, rid: str) -> Call:
    store_url = f"sqlite:///{tmp / 'jobs.sqlite3'}"
    store = open_store(store_url, 3600)
    store.create(new_job(rid, "efficientnet-lite0", "tabby", time.time(), 300))
    store.close()
    event, _ = request_event(rid, sample_bytes("cat.png"), 1 << 20, "/tests")
    headers, body = events.to_binary(event)
    env = {"MODEL_NAME": "efficientnet-lite2", "JOB_STORE_URL": store_url}
    return Call(env, "POST", "/", body, 200, headers)


CASES: dict[str, Callable[[Backend, Path, str], Call]] = {
    "predict": _predict,
    "prediction_log": _prediction_log,
    "prediction_log_ingest": _prediction_log_ingest,
    "prediction_log_dead_letter": _prediction_log_dead_letter,
    "ab_router": _ab_router,
    "fanout": _fanout,
    "sync_async": _sync_async,
    "async_worker": _async_worker,
}


def test_every_function_has_a_shutdown_case() -> None:
    assert set(CASES) == set(SOURCES)


@pytest.mark.parametrize("target", sorted(CASES))
def test_sigterm_finishes_the_request_in_flight(
    target: str, sink: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rid = f"in-flight-{target}"
    call = CASES[target](request.getfixturevalue, tmp_path, rid)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "FUNCTION_TARGET": target,
        "FUNCTION_SOURCE": str(REPO_ROOT / SOURCES[target]),
        "K_SINK": f"{sink}/events",
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        **call.env,
    }
    with server([*SERVE, f"--port={port}"], env, f"{url}/health") as process:
        headers = {"X-Request-Id": rid, **call.headers}
        with HeldRequest(url, call.method, call.path, call.body, headers) as held:
            os.killpg(process.pid, signal.SIGTERM)
            wait_for(refusing(url), 10, f"{target} to stop accepting")
            status, body = held.finish()
        assert status == call.status, body[:500]
        assert process.wait(30) == 0
    if call.logged:  # recorded after the answer, sent before the exit
        assert rid in logged_jobs(sink)


def test_sigterm_under_load_answers_everything_accepted_and_flushes_the_spool(
    sink: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "FUNCTION_TARGET": "predict",
        "FUNCTION_SOURCE": PREDICT_SOURCE,
        "MODEL_NAME": "iris-svc",
        "WORKERS": "2",
        "K_SINK": f"{sink}/events",
        "OUTBOX_DIR": str(tmp_path / "outbox"),
    }
    answered: list[str] = []
    failures: list[str] = []
    enough = threading.Event()
    with server([*SERVE, f"--port={port}"], env, f"{url}/v2/health/ready") as process:

        def load() -> None:
            with httpx.Client() as client:
                i = 0
                while True:
                    rid = f"{threading.get_ident()}-{i}"
                    i += 1
                    try:
                        response = client.post(
                            f"{url}/predict", content=SETOSA, headers={"X-Request-Id": rid, **JSON}
                        )
                    except httpx.TransportError:
                        return  # refused once the server stops accepting: expected
                    if response.status_code == 200:
                        answered.append(rid)
                        if len(answered) >= 200:
                            enough.set()
                    else:
                        failures.append(f"{response.status_code} {response.text[:100]}")

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        assert enough.wait(60), f"only {len(answered)} answers"
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0
        for thread in threads:
            thread.join(10)
    assert failures == []
    assert set(answered) <= logged_jobs(sink)  # every answered prediction's event was sent


def test_sigterm_while_the_worker_builds_the_app_stops_it_at_once() -> None:
    """granian installs a worker's signal handler only once the app is built (the model
    warm): a SIGTERM landing before must still stop the worker gracefully, not leave it
    serving until granian kills it (``workers_kill_timeout``, 30 s)."""
    port = free_port()
    env = {
        **os.environ,
        "FUNCTION_TARGET": "predict",
        "FUNCTION_SOURCE": PREDICT_SOURCE,
        "MODEL_NAME": "iris-svc",
    }
    process = subprocess.Popen(
        [*SERVE, f"--port={port}"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    try:
        wait_for(lambda: children.read_text().split() or None, 30, "a worker process")
        process.terminate()  # as the kubelet does: the main process, which stops its workers
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
