"""Graceful shutdown of the production server: SIGTERM finishes what is in flight, flushes
the event spool to the sink, and exits 0."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from functions.core.settings import REPO_ROOT
from tests.helpers import PREDICT_SOURCE, free_port, server

pytestmark = pytest.mark.e2e
SETOSA = {"data": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def sink() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server(
        [sys.executable, str(REPO_ROOT / "tests" / "event_sink.py"), str(port)], {}, f"{url}/ready"
    ):
        yield url


def test_sigterm_finishes_in_flight_requests_and_flushes_the_spool(
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
    command = [sys.executable, "-m", "functions.core.serve", "--host=127.0.0.1", f"--port={port}"]
    answered: list[str] = []
    failures: list[str] = []
    with server(command, env, f"{url}/v2/health/ready") as process:
        stop = threading.Event()

        def load() -> None:
            with httpx.Client() as client:
                i = 0
                while not stop.is_set():
                    rid = f"{threading.get_ident()}-{i}"
                    i += 1
                    try:
                        response = client.post(
                            f"{url}/predict", json=SETOSA, headers={"X-Request-Id": rid}
                        )
                    except httpx.TransportError:
                        return  # refused once the server stops accepting: expected
                    if response.status_code == 200:
                        answered.append(rid)
                    else:
                        failures.append(f"{response.status_code} {response.text[:100]}")

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        while len(answered) < 200:
            pass
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0
        stop.set()
        for thread in threads:
            thread.join(10)
    assert failures == []
    received = {
        orjson.loads(attempt["data"])["jobid"]
        for attempt in httpx.get(f"{sink}/_events").json()
        if attempt["path"] == "/events"
    }
    assert set(answered) <= received  # every answered prediction's event was sent before exit
