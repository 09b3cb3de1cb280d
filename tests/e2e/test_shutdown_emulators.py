"""Graceful shutdown of the emulator processes, each a real process over loopback stopped by
SIGTERM to its pid: ``emulators.dev`` (gateway, broker and launcher) and ``emulators.launcher``
stop accepting, finish what is in flight, deliver every event the broker accepted, stop the
Services they run, and exit 0. Manifests are written to tmp_path."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from functions.core import events
from functions.core.event_data import PredictionLogData
from functions.prediction_log.store import Query, SqliteLogStore
from tests.helpers import HeldRequest, free_port, ready, refusing, server, wait_for

pytestmark = pytest.mark.e2e
NAMESPACE = "ml-serving"
SETOSA = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})
JSON = {"Content-Type": "application/json"}
TYPE = "dev.mlserving.test.shutdown.v1"


def ksvc(name: str, env: dict[str, str], ready: str = "/health") -> dict[str, Any]:
    container = {
        "name": "function",
        "image": "ml-serving-functions",
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "readinessProbe": {"httpGet": {"path": ready}},
    }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


IRIS = ksvc(
    "iris",
    {
        "FUNCTION_TARGET": "predict",
        "FUNCTION_SOURCE": "functions/predict/main.py",
        "MODEL_NAME": "iris-svc",
    },
)


def write(folder: Path, docs: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True)
    names = []
    for doc in docs:
        names.append(f"{doc['kind']}-{doc['metadata']['name']}.yaml".lower())
        (folder / names[-1]).write_text(yaml.safe_dump(doc))
    kustomization = {"namespace": NAMESPACE, "resources": names}
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return folder


def trigger(name: str, type_: str, subscriber: dict[str, Any], **delivery: Any) -> dict[str, Any]:
    spec = {
        "broker": "default",
        "filter": {"attributes": {"type": type_}},
        "subscriber": subscriber,
    }
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": spec | ({"delivery": delivery} if delivery else {}),
    }


def dev_command(knative: Path, eventing: Path) -> tuple[list[str], str]:
    port = free_port()
    command = [
        sys.executable, "-m", "emulators.dev", f"--port={port}",
        f"--knative={knative}", f"--eventing={eventing}",
    ]  # fmt: skip
    return command, f"http://127.0.0.1:{port}"


def routes(gateway: str) -> dict[str, Any]:
    """The gateway's routes once every Service behind it answers its readiness probe."""
    for entry in httpx.get(f"{gateway}/_routes").json()["services"]:
        wait_for(ready(f"{entry['url']}/health"), 60, f"{entry['name']} behind the gateway")
    listing: dict[str, Any] = httpx.get(f"{gateway}/_routes").json()
    return listing


def test_dev_finishes_requests_in_flight_then_stops_its_services(tmp_path: Path) -> None:
    # ab-router calls iris by its Knative URL, through the gateway as in a cluster: that call
    # is made only once the body arrives, after SIGTERM.
    router = ksvc(
        "ab-router",
        {
            "FUNCTION_TARGET": "ab_router",
            "FUNCTION_SOURCE": "functions/ab_router/main.py",
            "VARIANTS": f"a=http://iris.{NAMESPACE}.svc.cluster.local",
            "WEIGHTS": "a=100",
        },
    )
    knative = write(tmp_path / "knative", [IRIS, router])
    command, gateway = dev_command(knative, tmp_path / "eventing")
    with server(command, {}, f"{gateway}/_routes") as process:
        upstreams = [t["upstream"] for s in routes(gateway)["services"] for t in s["traffic"]]
        headers = {**JSON, "X-User-Id": "user-1"}
        with HeldRequest(gateway, "POST", "/ab-router/predict", SETOSA, headers) as held:
            os.kill(process.pid, signal.SIGTERM)
            wait_for(refusing(gateway), 10, "the gateway to stop accepting")
            status, body = held.finish()
        assert status == 200, body[:500]
        assert orjson.loads(body)["model"] == "iris-svc"
        assert process.wait(60) == 0
    for upstream in upstreams:  # every Service was stopped before the platform exited
        assert refusing(upstream)(), upstream


def test_dev_stopped_while_its_services_start_stops_them(tmp_path: Path) -> None:
    """SIGTERM before the Services are ready: no wait for readiness, and none left running."""
    knative = write(tmp_path / "knative", [IRIS])
    command, gateway = dev_command(knative, tmp_path / "eventing")
    with server(command, {}, f"{gateway}/_routes") as process:
        listing = httpx.get(f"{gateway}/_routes").json()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0
    starting = [u for s in listing["services"] for t in s["traffic"] for u in t["replica_urls"]]
    assert starting  # its process was started, not yet ready
    for upstream in starting:
        assert refusing(upstream)(), upstream


def test_dev_delivers_every_accepted_event_before_it_exits(tmp_path: Path, sink: str) -> None:
    """An event in retry backoff when SIGTERM lands is still delivered, and so is the reply
    its delivery gets, through the gateway to a Service (prediction-log-ingest, which stores
    it)."""
    log_db = tmp_path / "log.sqlite3"
    log = ksvc(
        "prediction-log-ingest",
        {
            "FUNCTION_TARGET": "prediction_log_ingest",
            "FUNCTION_SOURCE": "functions/prediction_log/main.py",
            "LOG_STORE_URL": f"sqlite:///{log_db}",
        },
    )
    broker = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "default"},
    }
    retried = trigger(
        "retried",
        TYPE,
        {"uri": f"{sink}/retried?fail=1&reply={events.PREDICTION_LOGGED}"},
        retry=2,
        backoffPolicy="linear",
        backoffDelay="PT1S",
    )
    stored = trigger(
        "stored",
        events.PREDICTION_LOGGED,
        {
            "ref": {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "name": "prediction-log-ingest",
            }
        },
    )
    knative = write(tmp_path / "knative", [log])
    eventing = write(tmp_path / "eventing", [broker, retried, stored])
    command, gateway = dev_command(knative, eventing)
    record = PredictionLogData(
        job_id="accepted-1", service="iris", model="iris-svc", version="1",
        variant="iris-00001", endpoint="predict", status=200, latency_ms=1.0,
    )  # fmt: skip
    event = events.make(TYPE, "/tests", record.model_dump(mode="json"), jobid="accepted-1")
    with server(command, {}, f"{gateway}/_routes") as process:
        ingress = routes(gateway)["broker"]["url"]
        headers, body = events.to_binary(event)
        assert httpx.post(ingress, headers=headers, content=body).status_code == 202

        def attempts() -> list[bool]:
            seen = httpx.get(f"{sink}/_events").json()
            return [a["failed"] for a in seen if a["headers"].get("ce-id") == event["id"]]

        wait_for(lambda: attempts() or None, 10, "the first delivery attempt")
        os.kill(process.pid, signal.SIGTERM)  # the retry is a second away
        assert process.wait(60) == 0
    assert attempts() == [True, False]
    store = SqliteLogStore(log_db)
    try:
        assert [r["job_id"] for r in store.query(Query(job_id="accepted-1"))] == ["accepted-1"]
    finally:
        store.close()


def test_launcher_stops_its_services_gracefully(tmp_path: Path) -> None:
    knative = write(tmp_path / "knative", [IRIS])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "emulators.launcher", f"--knative={knative}", f"--first-port={port}",
    ]  # fmt: skip
    with server(command, {}, f"{url}/health") as process:
        with HeldRequest(url, "POST", "/predict", SETOSA, JSON) as held:
            os.kill(process.pid, signal.SIGTERM)
            wait_for(refusing(url), 10, "iris to stop accepting")
            status, body = held.finish()
        assert status == 200, body[:500]
        assert process.wait(30) == 0
