"""Scaling as Knative's KPA does it, with short windows: an idle min-scale 0 Service goes to
zero and its next request (held by the activator) is answered; a load above the target brings
a replica, which goes away after; a Trigger's subscriber at zero still gets its events."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from emulators.autoscaler import AutoscalerConfig
from emulators.manifests import REPO_ROOT
from tests.helpers import LocalPlatform, wait_for

pytestmark = pytest.mark.e2e
SETOSA = {"data": [[5.1, 3.5, 1.4, 0.2]]}
SHORT = AutoscalerConfig(stable_window=6.0, scale_to_zero_grace_period=2.0)
TOKEN = "scaling-token-0123456789abcdef"


def traffic(platform: LocalPlatform, name: str) -> dict[str, Any]:
    routes = httpx.get(f"{platform.url}/_routes").json()["services"]
    [entry] = [e for e in routes if e["name"] == name]
    return dict(entry["traffic"][0])


def replicas(platform: LocalPlatform, name: str, count: int, seconds: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        entry = traffic(platform, name)
        return entry if entry["replicas"] == count and entry["desired"] == count else None

    return wait_for(check, seconds, f"{name} at {count} replicas")


def manifests(tmp_path: Path, services: dict[str, dict[str, str]], eventing: list[str]) -> Path:
    """``services``: name -> annotations over its manifest's; returns the knative folder."""
    knative = tmp_path / "knative"
    (knative / "services").mkdir(parents=True)
    for name, extra in services.items():
        source = REPO_ROOT / "knative" / "services" / f"{name}.yaml"
        docs = list(yaml.safe_load_all(source.read_text()))
        template = docs[0]["spec"]["template"]  # the Service (a PVC may follow)
        template.setdefault("metadata", {}).setdefault("annotations", {}).update(extra)
        for entry in template["spec"]["containers"][0]["env"]:
            if entry["name"] == "WORKERS":
                entry["value"] = "1"  # a replica is one process: two cores go further
        (knative / "services" / f"{name}.yaml").write_text(yaml.safe_dump_all(docs))
    (knative / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"namespace": "ml-serving", "resources": [f"services/{n}.yaml" for n in services]}
        )
    )
    if eventing:
        folder = tmp_path / "eventing"
        folder.mkdir()
        for name in eventing:
            shutil.copy(REPO_ROOT / "eventing" / name, folder)
        (folder / "kustomization.yaml").write_text(
            yaml.safe_dump({"namespace": "ml-serving", "resources": eventing})
        )
    return knative


@pytest.fixture
def iris(tmp_path: Path) -> Iterator[LocalPlatform]:
    knative = manifests(tmp_path, {"iris": {"autoscaling.knative.dev/max-scale": "2"}}, [])
    running = LocalPlatform(knative, None, {}, autoscaler=SHORT)
    yield running
    running.stop()


def test_an_idle_service_scales_to_zero_and_its_next_request_is_answered(
    iris: LocalPlatform,
) -> None:
    assert httpx.post(f"{iris.url}/iris/predict", json=SETOSA).status_code == 200
    zero = replicas(iris, "iris", 0, 30)  # 6 s window + 2 s grace, and the drain
    assert zero["upstream"] is None
    assert iris.launcher.revisions["iris"].pid is None  # no process left
    started = time.monotonic()
    answer = httpx.post(f"{iris.url}/iris/predict", json=SETOSA, timeout=60)
    cold = time.monotonic() - started
    assert answer.status_code == 200
    entry = traffic(iris, "iris")
    assert entry["replicas"] == 1
    assert entry["upstream"] is not None
    assert 0 < entry["cold_start_seconds"] < cold  # the process's start, inside the answer
    metrics = httpx.get(f"{iris.url}/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain; version=")
    series = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
    }
    iris_1 = (("revision", "iris-00001"), ("service", "iris"))
    assert series["mlf_revision_replicas", iris_1] == 1
    assert series["mlf_revision_cold_starts_total", iris_1] == 2  # the first start, and now
    assert series["mlf_gateway_requests_total", (("code", "200"), *iris_1)] == 2
    # a Service's own /metrics, by its Host, is still the Service's
    own = httpx.get(f"{iris.url}/metrics", headers={"Host": "iris.ml-serving.example.com"})
    assert "mlf_requests_total" in own.text


def test_a_load_above_the_target_brings_a_second_replica_that_goes_away_after(
    iris: LocalPlatform,
) -> None:
    """containerConcurrency 2 at 70 %: a target of 1.4 in flight per replica; 4 clients in a
    loop want 3, max-scale says 2. None of their requests fails."""
    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=iris.url, timeout=60) as http:
            for _ in range(2000):  # bounded; stopped long before
                if stop.is_set():
                    return
                statuses.append(http.post("/iris/predict", json=SETOSA).status_code)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        replicas(iris, "iris", 2, 30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert len(statuses) > 100
    assert set(statuses) == {200}
    replicas(iris, "iris", 1, 30)  # after a stable window without the load


def test_a_trigger_subscriber_at_zero_still_gets_its_events(tmp_path: Path) -> None:
    knative = manifests(
        tmp_path,
        {
            "iris": {"autoscaling.knative.dev/min-scale": "1"},
            "prediction-log": {},
            "prediction-log-ingest": {"autoscaling.knative.dev/min-scale": "0"},
            "prediction-log-dead-letter": {},
        },
        ["broker.yaml", "sink-binding.yaml", "prediction-log.yaml"],
    )
    env = {
        "LOG_STORE_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        "DEAD_LETTER_DIR": str(tmp_path / "dead-letters"),
        "API_TOKEN": TOKEN,
    }
    platform = LocalPlatform(knative, tmp_path / "eventing", env, autoscaler=SHORT)
    try:
        replicas(platform, "prediction-log-ingest", 0, 30)
        for i in range(5):
            answer = httpx.post(
                f"{platform.url}/iris/predict", json=SETOSA, headers={"X-Request-Id": f"z-{i}"}
            )
            assert answer.status_code == 200

        def stored() -> list[str] | None:
            logs = httpx.get(
                f"{platform.url}/prediction-log/logs",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=30,
            )
            jobs = sorted(r["job_id"] for r in logs.json()["records"])
            return jobs if len(jobs) >= 5 else None

        assert wait_for(stored, 60, "the records") == [f"z-{i}" for i in range(5)]
        assert traffic(platform, "prediction-log-ingest")["replicas"] == 1  # woken by delivery
        assert platform.events.stats["dead_lettered"] == 0
    finally:
        platform.stop()
