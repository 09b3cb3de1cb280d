"""What a client of the public gateway must not be able to do, tried against the whole local
platform (`make dev`, real processes on loopback), each attack a bounded handful of requests.

The reproductions of issue 16: before visibility, a forged dead letter or a forged
``inference.requested`` posted through the public gateway changed another client's job; with
visibility alone, the same event posted through the cluster-local listener (from inside the
cluster) still did. Now every subscriber checks the broker's OIDC token: no token, a
self-signed one, or one the broker signed for another subscriber, is a 401. Before the
gateway's read deadlines, slowloris connections stayed open until the fd limit.
"""

from __future__ import annotations

import base64
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from emulators.oidc import Issuer, trigger_subject
from functions.core import events
from functions.core.event_data import PredictionLogData
from functions.core.settings import REPO_ROOT
from tests.e2e.conftest import BEARER, HEADER_TIMEOUT
from tests.helpers import LocalPlatform, copy_kustomization, poll_until

pytestmark = pytest.mark.e2e
JSON = {"Content-Type": "application/json"}


def routes(platform: str) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in httpx.get(f"{platform}/_routes").json()["services"]}


def cluster_local(platform: str) -> list[str]:
    return sorted(n for n, s in routes(platform).items() if s["visibility"] == "cluster-local")


def test_the_internal_services_are_cluster_local(platform: str) -> None:
    assert {"async-worker", "ab-router", "iris-rf", "iris-svc", "iris-setosa"} <= set(
        cluster_local(platform)
    )


def test_no_cluster_local_service_answers_on_the_public_port(platform: str) -> None:
    for name in cluster_local(platform):
        for path, host in (
            (f"/{name}/health", None),
            ("/health", f"{name}.ml-serving.example.com"),
            ("/health", f"{name}.ml-serving.svc.cluster.local"),
        ):
            headers = {"Host": host} if host else {}
            answer = httpx.get(platform + path, headers=headers)
            assert answer.status_code == 404, (name, path, host)
            assert answer.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"{routes(platform)[name]['url']}/health").status_code == 200


def accepted_job(platform: str) -> str:
    answer = httpx.get(f"{platform}/sync-async/predict/test", timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["job_id"])


def forged(kind: str, job_id: str) -> tuple[dict[str, str], bytes]:
    if kind == "dead-letter":
        data: dict[str, Any] = {"job_id": job_id, "image_data": base64.b64encode(b"x").decode()}
        event = events.make(events.INFERENCE_REQUESTED, "/attacker", data)
        event["knativeerrorcode"] = "500"
    else:
        data = {"job_id": job_id, "image_data": base64.b64encode(b"honeycomb").decode()}
        event = events.make(events.INFERENCE_REQUESTED, "/attacker", data)
    return events.to_binary(event)


@pytest.mark.parametrize(("kind", "path"), [("dead-letter", "/dead-letter"), ("request", "/")])
def test_a_forged_event_for_another_clients_job_is_refused(
    platform: str, kind: str, path: str
) -> None:
    job_id = accepted_job(platform)
    headers, body = forged(kind, job_id)
    for via in (f"{platform}/async-worker{path}", platform + path):
        host = {} if via.startswith(f"{platform}/async-worker") else {
            "Host": "async-worker.ml-serving.example.com"
        }  # fmt: skip
        answer = httpx.post(via, content=body, headers=headers | host)
        assert answer.status_code == 404, answer.text
    deadline = time.monotonic() + 60
    while (state := job(platform, job_id))["status"] == "pending":
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.2)
    assert state["status"] == "done", state  # the real worker's answer, not the forged one
    assert state["prediction"] != "honeycomb"
    assert "reason" not in state


def job(platform: str, job_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{platform}/sync-async/job/{job_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()[job_id])


def test_a_variant_is_not_reached_around_its_route(platform: str) -> None:
    """The A/B variants answer through the ab-test route only (which marks how it chose
    them; the edge drops a client's own X-AB-Assignment: tests/e2e/test_gateway.py)."""
    body = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})
    assert httpx.post(f"{platform}/ab-test/predict", content=body, headers=JSON).status_code == 200
    for variant in ("iris-rf", "iris-svc", "ab-router"):
        answer = httpx.post(f"{platform}/{variant}/predict", content=body, headers=JSON)
        assert answer.status_code == 404, variant


def test_slowloris_connections_are_cut_off_on_both_listeners(platform: str) -> None:
    local = urlsplit(routes(platform)["async-worker"]["url"])
    public = urlsplit(platform)
    conns = [
        socket.create_connection((url.hostname or "", url.port or 80), timeout=5)
        for url in (public, local)
        for _ in range(20)
    ]
    try:
        for conn in conns:
            conn.sendall(b"GET /iris/health HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # never ends
        time.sleep(HEADER_TIMEOUT + 2)
        for conn in conns:
            conn.settimeout(1)
            answer = conn.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
            assert b"application/problem+json" in answer
            assert conn.recv(65536) == b""  # and closed
    finally:
        for conn in conns:
            conn.close()


# -- forged events from inside the cluster: the subscribers check the broker's token --------

NAMESPACE = "ml-serving"
SUBSCRIBERS = {  # Service -> (path, kind of event it takes)
    "async-worker": [("/", "request"), ("/dead-letter", "dead-letter")],
    "prediction-log-ingest": [("/", "record")],
    "prediction-log-dead-letter": [("/", "record")],
}
TRIGGER_OF = {
    "async-worker": "async-worker",
    "prediction-log-ingest": "prediction-log",
    "prediction-log-dead-letter": "prediction-log",
}


def audience(service: str) -> str:
    return f"serving.knative.dev/service/{NAMESPACE}/{service}"


def forged_record(job_id: str) -> tuple[dict[str, str], bytes]:
    record = PredictionLogData(
        job_id=job_id, service="iris", model="iris-svc", version="1", variant="x",
        endpoint="predict", status=200, latency_ms=1.0,
    )  # fmt: skip
    event = events.make(events.PREDICTION_LOGGED, "/attacker", record.model_dump(mode="json"))
    return events.to_binary(event)


def forged_for(kind: str, job_id: str) -> tuple[dict[str, str], bytes]:
    return forged_record(job_id) if kind == "record" else forged(kind, job_id)


def self_signed(issuer_url: str, kid: str | None, service: str) -> str:
    """A token with every claim right (issuer, audience, subject), signed by a key of the
    forger's own, under a kid of its own or the real one (which the JWKS shows anyone)."""
    forger = Issuer(issuer_url)
    if kid is not None:
        forger.kid = kid
    return forger.token(audience(service), trigger_subject(NAMESPACE, TRIGGER_OF[service]))


def assert_refused(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")


def logged(platform: str, job_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{platform}/prediction-log/logs", params={"job_id": job_id}, headers=BEARER)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["records"])


def flushed(platform: str) -> None:
    """A real prediction's record reached the store: what was posted before it was handled."""
    rid = f"flush-{uuid.uuid4()}"
    assert httpx.get(f"{platform}/iris/predict/test", headers={"X-Request-Id": rid}).is_success
    poll_until(lambda: bool(logged(platform, rid)), 60, f"{rid} in the log")


def test_forged_events_without_the_brokers_token_are_refused_inside_the_cluster(
    platform: str,
) -> None:
    """Through the cluster-local listener (what any pod reaches): no token, a self-signed
    one, one under the broker's kid: 401 at every subscriber, nothing stored, no job moved."""
    answer = httpx.get(f"{platform}/_routes").json()
    listed = {s["name"]: s for s in answer["services"]}
    issuer = answer["issuer"]["url"]  # as public as the API server's discovery document
    kid = httpx.get(f"{issuer}/openid/v1/jwks").json()["keys"][0]["kid"]
    job_id = accepted_job(platform)
    forged_jobs = []
    for service, paths in SUBSCRIBERS.items():
        base = listed[service]["url"]
        tokens = [None, self_signed(issuer, None, service), self_signed(issuer, kid, service)]
        for path, kind in paths:
            for token in tokens:
                target = job_id if kind != "record" else f"forged-{uuid.uuid4()}"
                forged_jobs += [target] if kind == "record" else []
                headers, body = forged_for(kind, target)
                if token is not None:
                    headers["Authorization"] = f"Bearer {token}"
                assert_refused(httpx.post(base + path, content=body, headers=headers))
    flushed(platform)
    assert all(not logged(platform, j) for j in forged_jobs)
    deadline = time.monotonic() + 60
    while (state := job(platform, job_id))["status"] == "pending":
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.2)
    assert state["status"] == "done", state  # the real worker's answer
    assert state["prediction"] != "honeycomb"
    assert "reason" not in state


@pytest.fixture(scope="module")
def inner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """The sync-async and prediction-log patterns with their broker, in-process, so a test
    holds the broker's issuer: it can sign what the broker signs, for one subscriber."""
    root = tmp_path_factory.mktemp("inner")
    services = ["iris", "imagenet", "sync-async", "prediction-log", *SUBSCRIBERS]
    knative = copy_kustomization(
        REPO_ROOT / "knative", root / "knative", [f"services/{n}.yaml" for n in services], NAMESPACE
    )
    resources = ["broker.yaml", "sink-binding.yaml", "prediction-log.yaml", "sync-async.yaml"]
    eventing = copy_kustomization(REPO_ROOT / "eventing", root / "eventing", resources, NAMESPACE)
    env = {
        "LOG_STORE_URL": f"sqlite:///{root / 'log.sqlite3'}",
        "OUTBOX_DIR": str(root / "outbox"),
        "DEAD_LETTER_DIR": str(root / "dead-letters"),
        "JOB_STORE_URL": f"sqlite:///{root / 'jobs.sqlite3'}",
        "API_TOKEN": BEARER["Authorization"].removeprefix("Bearer "),
        "LOG_LEVEL": "WARNING",
    }
    running = LocalPlatform(knative, eventing, env)
    yield running
    running.stop()


def brokers_token(platform: LocalPlatform, service: str) -> str:
    """A token the broker signs for deliveries to ``service``."""
    return platform.issuer.token(audience(service), trigger_subject(NAMESPACE, TRIGGER_OF[service]))


def test_a_token_the_broker_signed_for_one_subscriber_is_refused_by_the_others(
    inner: LocalPlatform,
) -> None:
    """The worker's token replayed to the log's ingest and dead letters, theirs to the
    worker: 401, nothing stored, the job unchanged; the right one, as a control, passes."""
    job_id = accepted_job(inner.url)
    forged_jobs = []
    for service, paths in SUBSCRIBERS.items():
        others = [s for s in SUBSCRIBERS if s != service]
        for path, kind in paths:
            for other in others:
                target = job_id if kind != "record" else f"replayed-{uuid.uuid4()}"
                forged_jobs += [target] if kind == "record" else []
                headers, body = forged_for(kind, target)
                headers["Authorization"] = f"Bearer {brokers_token(inner, other)}"
                assert_refused(
                    httpx.post(f"{inner.url}/{service}{path}", content=body, headers=headers)
                )
    control = f"control-{uuid.uuid4()}"
    headers, body = forged_record(control)
    headers["Authorization"] = f"Bearer {brokers_token(inner, 'prediction-log-ingest')}"
    answer = httpx.post(f"{inner.url}/prediction-log-ingest/", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    poll_until(lambda: bool(logged(inner.url, control)), 30, "the control record stored")
    flushed(inner.url)
    assert all(not logged(inner.url, j) for j in forged_jobs)
    deadline = time.monotonic() + 60
    while (state := job(inner.url, job_id))["status"] == "pending":
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.2)
    assert state["status"] == "done", state
    assert state["prediction"] != "honeycomb"
