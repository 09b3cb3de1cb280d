"""The predictor as real processes on loopback: the functions-framework command, the
production server with two workers, and the launcher that runs the Knative Services."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import httpx
import pytest

from emulators.launcher import Launcher
from functions.core.settings import REPO_ROOT
from tests.helpers import PREDICT_SOURCE, free_port, server, wait_for

pytestmark = pytest.mark.e2e
SETOSA = {"data": [[5.1, 3.5, 1.4, 0.2]]}


def test_functions_framework_command_serves_the_predictor() -> None:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("functions-framework")),
        "--target=predict",
        f"--source={PREDICT_SOURCE}",
        "--host=127.0.0.1",
        f"--port={port}",
    ]
    url = f"http://127.0.0.1:{port}"
    with server(command, {"MODEL_NAME": "iris-svc"}, f"{url}/v2/health/ready"):
        response = httpx.post(
            f"{url}/predict/label", json=SETOSA, headers={"X-Request-Id": "e2e-1"}
        )
        assert response.status_code == 200
        assert response.json()["prediction"]["label"] == "setosa"
        assert response.headers["X-Request-Id"] == "e2e-1"
        bad = httpx.post(
            f"{url}/predict", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 400
        assert bad.headers["Content-Type"] == "application/problem+json"


def test_production_server_counts_metrics_over_workers_and_stops_on_sigterm() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "functions.core.serve", "--host=127.0.0.1", f"--port={port}"]
    env = {
        "FUNCTION_TARGET": "predict",
        "FUNCTION_SOURCE": PREDICT_SOURCE,
        "MODEL_NAME": "iris-rf",
        "WORKERS": "2",
    }
    with server(command, env, f"{url}/v2/health/ready") as process, httpx.Client() as client:
        for _ in range(40):  # new connections, so both workers take some
            assert httpx.post(f"{url}/predict", json=SETOSA).status_code == 200
        text = client.get(f"{url}/metrics").text
        line = next(
            line
            for line in text.splitlines()
            if line.startswith('mlf_requests_total{code="200",endpoint="predict"')
        )
        assert float(line.rsplit(" ", 1)[1]) == 40.0
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(20) == 0


@pytest.fixture
def one_service(tmp_path: Path) -> Path:
    """A kustomization holding only the iris Service from knative/."""
    shutil.copy(REPO_ROOT / "knative" / "services" / "iris.yaml", tmp_path / "iris.yaml")
    (tmp_path / "kustomization.yaml").write_text("namespace: test\nresources:\n  - iris.yaml\n")
    return tmp_path


def test_launcher_runs_a_service_from_its_manifest_and_restarts_it(one_service: Path) -> None:
    launcher = Launcher(one_service, dict(os.environ), backoff=(0.1, 1.0))
    launcher.start()
    try:
        assert launcher.wait_ready(60) == []
        revision = launcher.revisions["iris"]
        body = httpx.get(f"{revision.url}/predict/test").json()
        assert body["is_outlier"] is False  # OUTLIER_MODEL came from the manifest
        first_pid = revision.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        wait_for(lambda: revision.pid if revision.pid != first_pid else None, 30, "a restart")
        assert revision.wait_ready(60)
        assert revision.restarts == 1
        assert httpx.get(f"{revision.url}/predict/test").status_code == 200
    finally:
        launcher.stop()
    assert revision.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(revision.pid, 0)
