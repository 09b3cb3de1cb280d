"""The activator: requests for a Service that has no ready process are held, not refused,
during ``make dev``'s start, while the launcher restarts a crashed process, and until a
revision's progress deadline; past it, a 503 that says why."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from emulators.manifests import REPO_ROOT
from tests.helpers import LocalPlatform, free_port, wait_for

pytestmark = pytest.mark.e2e
SETOSA = {"data": [[5.1, 3.5, 1.4, 0.2]]}


def kustomization(folder: Path, *docs: dict) -> Path:
    (folder / "services").mkdir(parents=True)
    names = []
    for doc in docs:
        names.append(f"services/{doc['metadata']['name']}.yaml")
        (folder / names[-1]).write_text(yaml.safe_dump(doc))
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump({"namespace": "t", "resources": names})
    )
    return folder


def service(name: str, rename: str | None = None, **env: str) -> dict:
    doc = yaml.safe_load((REPO_ROOT / "knative" / "services" / f"{name}.yaml").read_text())
    doc["metadata"]["name"] = rename or name
    container = doc["spec"]["template"]["spec"]["containers"][0]
    for entry in container["env"]:
        if entry["name"] in env:
            entry["value"] = env.pop(entry["name"])
    container["env"] += [{"name": k, "value": v} for k, v in env.items()]
    return doc


def test_requests_sent_as_soon_as_the_gateway_answers_are_all_answered(tmp_path: Path) -> None:
    """Was: the gateway listened before the Services were up, and a request in the first
    seconds got ``503 ... iris (iris-00001): [Errno 111] Connection refused``."""
    knative = kustomization(tmp_path / "knative", service("iris"), service("prediction-log"))
    port = free_port()
    command = [sys.executable, "-m", "emulators.dev", f"--port={port}"]
    command += [f"--knative={knative}", f"--eventing={tmp_path / 'none'}"]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LOG_STORE_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}"}
    with subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as process:
        try:

            def routes() -> bool | None:
                try:
                    return httpx.get(f"{url}/_routes").status_code == 200 or None
                except httpx.TransportError:
                    return None

            wait_for(routes, 60, "the gateway to answer")
            paths = ["/iris/predict", "/prediction-log/health"] * 4

            def predict(path: str) -> int:
                if path.endswith("/health"):
                    return httpx.get(url + path, timeout=60).status_code
                return httpx.post(url + path, json=SETOSA, timeout=60).status_code

            with ThreadPoolExecutor(len(paths)) as pool:
                statuses = list(pool.map(predict, paths))
            assert statuses == [200] * len(paths)
            # the platform's metrics are the cluster-local listener's, not the public one's
            assert httpx.get(f"{url}/metrics").status_code == 404
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LocalPlatform]:
    broken = service("iris", "broken", MODEL_NAME="no-such-model")
    broken["spec"]["template"]["metadata"]["annotations"][
        "serving.knative.dev/progress-deadline"
    ] = "8s"
    knative = kustomization(tmp_path / "knative", service("iris", WORKERS="1"), broken)
    running = LocalPlatform(knative, None, {}, require_ready=["iris"])
    yield running
    running.stop()


def test_a_crashed_service_holds_its_requests_until_it_is_restarted(
    platform: LocalPlatform,
) -> None:
    """SIGKILL of iris's process tree: what comes while the launcher restarts it waits and is
    answered. Only a request on the wire at the kill can fail; this client sends one at a
    time, so at most one."""
    iris = platform.launcher.revisions["iris"]
    statuses: list[int] = []
    with httpx.Client(base_url=platform.url, timeout=60) as client:
        for _ in range(20):
            statuses.append(client.post("/iris/predict", json=SETOSA).status_code)
        assert iris.pid is not None
        os.killpg(iris.pid, signal.SIGKILL)
        killed = time.monotonic()
        after = [client.post("/iris/predict", json=SETOSA).status_code for _ in range(20)]
    assert statuses == [200] * 20
    assert iris.restarts == 1
    assert after.count(200) >= 19, after
    assert time.monotonic() - killed < 30


def test_a_service_that_cannot_become_ready_is_a_503_with_the_reason_at_its_deadline(
    platform: LocalPlatform,
) -> None:
    started = time.monotonic()
    answer = httpx.post(
        f"{platform.url}/broken/predict",
        json=SETOSA,
        headers={"X-Request-Id": "held-1"},
        timeout=30,
    )
    took = time.monotonic() - started
    assert answer.status_code == 503
    assert answer.headers["Content-Type"] == "application/problem+json"
    problem = answer.json()
    assert problem["instance"] == "held-1"
    assert "no ready replica after 8s (its progress deadline)" in problem["detail"]
    assert "exited with" in problem["detail"]  # the reason: it crashes as it starts
    assert 7.5 < took < 15, took
    # and the platform is healthy: the other Service answers at once
    assert httpx.post(f"{platform.url}/iris/predict", json=SETOSA).status_code == 200


def test_a_stopped_service_is_a_503_at_once(platform: LocalPlatform) -> None:
    platform.launcher.revisions["iris"].stop()
    started = time.monotonic()
    answer = httpx.post(f"{platform.url}/iris/predict", json=SETOSA)
    assert answer.status_code == 503
    assert answer.json()["detail"] == "revision iris-00001 is stopped"
    assert time.monotonic() - started < 2
