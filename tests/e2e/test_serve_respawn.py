"""The production server's workers: one that dies after it warmed is respawned alone while
its sibling keeps serving; one that cannot load its model ends the server at once.

Issue 16's reproduction: a SIGKILLed granian worker took its whole Service down (the server
exited and was restarted, 642 x 503 at c=8 behind the gateway).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import PREDICT_SOURCE, free_port, poll_until, server, spawn, wait_for

pytestmark = pytest.mark.e2e
SERVE = [sys.executable, "-m", "functions.core.serve", "--host=127.0.0.1"]
ENV = {"FUNCTION_TARGET": "predict", "FUNCTION_SOURCE": PREDICT_SOURCE, "WORKERS": "2"}
SETOSA = {"data": [[5.1, 3.5, 1.4, 0.2]]}
REQUESTS, CLIENTS = 1000, 4
MOST_FAILED = 20  # those in flight on, or queued at, the killed worker (of 1,000)


def children(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (granian's workers), from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def load(url: str, results: list[bool], kill_at: threading.Event) -> None:
    """One client's share of the load, over a kept-alive connection as a proxy holds one."""
    with httpx.Client(timeout=10) as client:
        for _ in range(REQUESTS // CLIENTS):
            try:
                ok = client.post(f"{url}/predict", json=SETOSA).status_code == 200
            except httpx.TransportError:
                ok = False
            results.append(ok)
            if len(results) >= REQUESTS // 3:
                kill_at.set()


def test_a_killed_worker_is_respawned_while_its_sibling_serves() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**ENV, "MODEL_NAME": "iris-svc"}
    with server([*SERVE, f"--port={port}"], env, f"{url}/v2/health/ready") as process:
        workers = wait_for(lambda: w if len(w := children(process.pid)) == 2 else None, 30, "2")
        results: list[bool] = []
        kill_at = threading.Event()
        clients = [
            threading.Thread(target=load, args=(url, results, kill_at)) for _ in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        assert kill_at.wait(60), "the load did not get going"
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        for client in clients:
            client.join(120)
        failed = results.count(False)
        print(f"\n{failed} of {len(results)} requests failed with a worker SIGKILLed")  # noqa: T201
        assert len(results) == REQUESTS
        assert failed <= MOST_FAILED, f"{failed} of {REQUESTS} failed"
        assert process.poll() is None, "the server exited"
        poll_until(
            lambda: len(now := children(process.pid)) == 2 and victim not in now,
            30,
            "two workers again, the killed one replaced",
        )
        for _ in range(20):  # new connections, so both workers take some
            assert httpx.post(f"{url}/predict", json=SETOSA).status_code == 200


def test_a_model_that_cannot_load_ends_the_server_at_once(tmp_path: Path) -> None:
    env = {**ENV, "MODEL_NAME": "iris-svc", "MODEL_DIR": str(tmp_path)}  # no artifact there
    started = time.monotonic()
    process = spawn([*SERVE, f"--port={free_port()}"], env, Path.cwd(), stderr=subprocess.PIPE)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert time.monotonic() - started < 30
    assert b"iris-svc" in err  # the log says which model
